import {loadUserBundle, type UserBundle} from '../shared/bundle.js'
import {HqClient} from '../shared/hq-client.js'

/** What a command needs to call HQ as a user: the bundle and a client on the right URL. */
export type HqSession = {client: HqClient; bundle: UserBundle; bundlePath: string}

export async function openHqSession(flags: {hq?: string | undefined; user?: string | undefined}): Promise<HqSession> {
  const {path, bundle} = await loadUserBundle(flags.user)
  const client = await HqClient.connect(flags.hq ?? bundle.hq_url, {cert: bundle.cert, key: bundle.key, ca: bundle.ca})
  return {client, bundle, bundlePath: path}
}

/** Runs fn with a session to HQ and always closes it: what every HQ-calling command does. */
export async function withHq<T>(flags: {hq?: string | undefined; user?: string | undefined}, fn: (s: HqSession) => Promise<T>): Promise<T> {
  const session = await openHqSession(flags)
  try {
    return await fn(session)
  } finally {
    await session.client.close()
  }
}
