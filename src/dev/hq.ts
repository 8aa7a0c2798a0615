import {createHash} from 'node:crypto'
import {join} from 'node:path'

import {addUserOnline, renewUserOnline} from '../cli/identity.js'
import {approveRelease, type ImageListRow} from '../cli/releases.js'
import {pinStackService} from '../cli/stack.js'
import {initHq} from '../hq/init.js'
import {hqPath, readHqConfig, writeHqConfig} from '../hq/datadir.js'
import {readBundle, writeBundle, type UserBundle} from '../shared/bundle.js'
import type {Clock} from '../shared/clock.js'
import {JilError} from '../shared/errors.js'
import {exists} from '../shared/files.js'
import {HqClient} from '../shared/hq-client.js'
import type {ImageManifest, Track} from '../shared/manifest.js'
import type {Role} from '../shared/pki.js'
import {DEMO_IMAGE, DEV_OPERATOR, DEV_USERS, demoStack} from './plan.js'

/**
 * HQ's side of `jil dev`, through the same functions and API calls the CLI uses (no SQL): HQ
 * created once in D/hq, a user per role with bundles in D/users, the approved operator, and the demo
 * release signed by the ci-pipeline user onto devnet and promoted to testnet (one approval) and
 * mainnet (two, one a security-lead), with a stack spec per track. Every step looks at what HQ
 * already has first, so a second start (or one after a crash midway) only does what is missing.
 */

/** Any machine can run the dev fleet: HQ's hardware minimums would refuse a small laptop's nodes. */
const DEV_JOIN_MINIMUMS = {cpu_cores: 1, memory_bytes: 1, disk_bytes: 1}

/** Creates HQ in `dir` unless one is there; true when it was created now. */
export async function ensureHq(o: {dir: string; clock: Clock; progress: (l: string) => void}): Promise<boolean> {
  if (await exists(hqPath(o.dir, 'config'))) return false
  o.progress('creating HQ (CA, keys, embedded database)')
  await initHq({dataDir: o.dir, hostnames: [], force: false, profilePath: undefined, hqUrl: 'https://127.0.0.1:7443', clock: o.clock})
  await writeHqConfig(o.dir, {...(await readHqConfig(o.dir)), join_minimums: DEV_JOIN_MINIMUMS})
  return true
}

/**
 * Brings HQ's config.json up to date: its URL and its registry may change between runs (ports are
 * taken as found free). The registry is set before HQ starts, so HQ serves it (hq images --unsigned,
 * the unsigned-image alert); `null` removes it.
 */
export async function updateHqConfig(dir: string, patch: {url?: string; registry?: string | null}): Promise<void> {
  const config = await readHqConfig(dir)
  const {registry, ...rest} = config
  const nextRegistry = patch.registry === undefined ? registry : (patch.registry ?? undefined)
  const next = {...rest, ...(patch.url ? {hq_url: patch.url} : {}), ...(nextRegistry ? {registry: nextRegistry} : {})}
  if (JSON.stringify(next) !== JSON.stringify(config)) await writeHqConfig(dir, next)
}

export type DevUser = {name: string; role: Role; path: string; bundle: UserBundle}
export type DevUsers = Record<Role, DevUser>

export function userBundlePath(usersDir: string, name: string): string {
  return join(usersDir, `${name}.bundle.json`)
}

export function connectAs(url: string, u: DevUser): Promise<HqClient> {
  return HqClient.connect(url, {cert: u.bundle.cert, key: u.bundle.key, ca: u.bundle.ca})
}

/**
 * The users: admin's bundle is the one `hq init` wrote (copied with HQ's current URL); the others are
 * added by the admin (their keys are made here, HQ signs CSRs). Bundles already there are kept, with
 * the URL brought up to date.
 */
export async function ensureUsers(o: {url: string; hqDir: string; usersDir: string; progress: (l: string) => void}): Promise<DevUsers> {
  const out: Partial<DevUsers> = {}
  const adminPath = userBundlePath(o.usersDir, 'admin')
  const initial = (await exists(adminPath)) ? await readBundle(adminPath) : await readBundle(hqPath(o.hqDir, 'adminBundle'))
  const admin: DevUser = {name: 'admin', role: 'admin', path: adminPath, bundle: {...initial, hq_url: o.url}}
  if (initial.hq_url !== o.url || !(await exists(adminPath))) await writeBundle(adminPath, admin.bundle)
  out.admin = admin
  const client = await connectAs(o.url, admin)
  try {
    for (const u of DEV_USERS) {
      if (u.role === 'admin') continue
      const path = userBundlePath(o.usersDir, u.name)
      if (await exists(path)) {
        const b = await readBundle(path)
        if (b.hq_url !== o.url) await writeBundle(path, {...b, hq_url: o.url})
        out[u.role] = {name: u.name, role: u.role, path, bundle: {...b, hq_url: o.url}}
        continue
      }
      o.progress(`adding user ${u.name} (${u.role})`)
      try {
        await addUserOnline(client, admin.bundle, u.name, u.role, path)
      } catch (err) {
        // HQ has the user but its bundle is gone (a run stopped in between): a new key and certificate.
        if (!(err instanceof JilError && err.code === 'USER_EXISTS')) throw err
        await renewUserOnline(client, admin.bundle, admin.path, u.name, path)
      }
      out[u.role] = {name: u.name, role: u.role, path, bundle: await readBundle(path)}
    }
    await client.request('POST', '/v1/operators', {name: DEV_OPERATOR, kyc: 'approved'}).catch((err: unknown) => {
      if (!(err instanceof JilError && err.code === 'OPERATOR_EXISTS')) throw err
    })
  } finally {
    await client.close()
  }
  return out as DevUsers
}

/** The commit a demo version was "built from": a fixed hex string, so re-signing on another machine reads the same. */
export function demoCommit(version: string): string {
  return createHash('sha256').update(`jil dev demo ${version}`).digest('hex').slice(0, 12)
}

const ignore = (...codes: string[]) => (err: unknown) => {
  if (!(err instanceof JilError && codes.includes(err.code))) throw err
}

/**
 * The demo release at `digest` as version `version`: signed onto devnet by ci-pipeline, approved by
 * the ops-lead and promoted to testnet, approved by the ops-lead and the security-lead and promoted
 * to mainnet; the demo stack set on every track and its services pinned to the version on testnet
 * and mainnet. Steps HQ already shows done are skipped.
 */
export async function ensureDemoRelease(o: {url: string; users: DevUsers; registry: string; digest: string; version: string; progress: (l: string) => void}): Promise<void> {
  const [ci, ops, sec] = await Promise.all([connectAs(o.url, o.users['ci-pipeline']), connectAs(o.url, o.users['ops-lead']), connectAs(o.url, o.users['security-lead'])])
  try {
    const onTrack = async (track: Track) => {
      const {images} = await ops.request<{images: ImageListRow[]}>('GET', `/v1/images?track=${track}`)
      return images.some((i) => i.digest === o.digest && !i.deprecated)
    }
    const ref = `${DEMO_IMAGE}@${o.digest}`
    if (!(await onTrack('devnet'))) {
      o.progress(`signing ${DEMO_IMAGE} ${o.version} onto devnet (as ci-pipeline)`)
      await ci.request<ImageManifest>('POST', '/v1/images', {image: `${o.registry}/${ref}`, version: o.version, commit: demoCommit(o.version)})
    }
    if (!(await onTrack('testnet'))) {
      o.progress(`approving and promoting ${o.version} to testnet (ops-lead)`)
      await approveRelease(ops, o.users['ops-lead'].bundle, ref, 'testnet').catch(ignore('ALREADY_APPROVED'))
      await ops.promoteImage(o.digest, 'testnet')
    }
    if (!(await onTrack('mainnet'))) {
      o.progress(`approving (ops-lead, security-lead) and promoting ${o.version} to mainnet`)
      await approveRelease(ops, o.users['ops-lead'].bundle, ref, 'mainnet').catch(ignore('ALREADY_APPROVED'))
      await approveRelease(sec, o.users['security-lead'].bundle, ref, 'mainnet').catch(ignore('ALREADY_APPROVED'))
      await sec.promoteImage(o.digest, 'mainnet')
    }
    const spec = demoStack()
    for (const track of ['devnet', 'testnet', 'mainnet'] as const) {
      const view = await ops.stack(track)
      if (!view.stack) {
        o.progress(`setting the ${track} stack (${spec.services.map((s) => s.name).join(', ')})`)
        await ops.setStack(track, spec)
      }
      if (track === 'devnet') continue
      const pinned = (await ops.stack(track)).versions
      for (const s of spec.services) {
        if (pinned[s.name]) continue
        await pinStackService(ops, o.users['ops-lead'].bundle, {track, service: s.name, version: o.version, confirm: false})
      }
    }
  } finally {
    await Promise.all([ci.close(), ops.close(), sec.close()])
  }
}
