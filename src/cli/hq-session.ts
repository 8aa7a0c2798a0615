import {loadUserBundle, type UserBundle} from '../shared/bundle.js'
import {HqClient} from '../shared/hq-client.js'

/** What a command needs to call HQ as a user: the bundle and a client on the right URL. */
export type HqSession = {client: HqClient; bundle: UserBundle; bundlePath: string}

export async function openHqSession(flags: {hq?: string | undefined; user?: string | undefined}): Promise<HqSession> {
  const {path, bundle} = await loadUserBundle(flags.user)
  const client = await HqClient.connect(flags.hq ?? bundle.hq_url, {cert: bundle.cert, key: bundle.key, ca: bundle.ca})
  return {client, bundle, bundlePath: path}
}
