import {mkdir, readFile} from 'node:fs/promises'
import {homedir} from 'node:os'
import {isAbsolute, join, resolve} from 'node:path'

import {JilError, systemCode, usageError} from '../shared/errors.js'
import {fileError, lockFile, writeFileAtomic} from '../shared/files.js'
import {NODE_ID_PATTERN} from '../shared/ids.js'

/**
 * The node's state dir (DESIGN.md §10): its config, its key and, once joined, its certificate and
 * what it pinned at join. node.key is 0600; the other files hold nothing secret (0644).
 */
export const NODE_FILES = {
  /** KEY=VALUE lines, written only by `jil node init`; systemd's EnvironmentFile and `sh` read it too. */
  env: 'node.env',
  /** The node's P-256 private key, PKCS#8 PEM, 0600. Never leaves the node. */
  key: 'node.key',
  /** The node certificate HQ issued (join, renew). */
  cert: 'node.crt',
  /** HQ's CA, pinned by fingerprint at join. */
  ca: 'ca.crt',
  /** HQ's image-signing public keys, pinned at join: [{key_id, public_key}]. */
  signingKeys: 'signing-keys.json',
  /** What HQ told the node at join; its presence means "joined". */
  identity: 'identity.json',
  /** Held while init, join or renew change the files above. */
  lock: 'node.lock',
} as const

export type NodeFile = keyof typeof NODE_FILES

export function nodePath(stateDir: string, file: NodeFile): string {
  return join(stateDir, NODE_FILES[file])
}

/**
 * Where the node keeps its state unless told otherwise: /var/lib/jil for root, else the XDG state
 * dir ($XDG_STATE_HOME/jil, ~/.local/state/jil), so an unprivileged `jil dev` node never needs root.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, uid: number | undefined = process.getuid?.()): string {
  if (uid === 0) return '/var/lib/jil'
  // The XDG spec says a relative $XDG_STATE_HOME is invalid and must be ignored.
  const xdg = env.XDG_STATE_HOME
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.local', 'state'), 'jil')
}

/** --state-dir, else JIL_STATE_DIR (oclif fills the flag from it; library callers get it here), else the default. */
export function resolveStateDir(dir: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const given = dir ?? env.JIL_STATE_DIR
  if (given === undefined || given === '') return defaultStateDir(env)
  if (given.trim() === '' || given.includes('\0')) {
    throw usageError('STATE_DIR_INVALID', 'the --state-dir is empty or not a valid path', 'pass --state-dir DIR (or set JIL_STATE_DIR)')
  }
  return resolve(given)
}

// ---------------------------------------------------------------------------------------------
// Validation of what an operator types. HQ validates again and is authoritative; these checks give
// a usage error with the fix before anything is written or sent.

export {NODE_ID_PATTERN} from '../shared/ids.js'

/**
 * A zone as written on the command line: `CC/REGULATOR`. Only the shape is checked here: the 13
 * zones are rows in HQ's zones table, and HQ refuses an unknown one at join (ZONE_UNKNOWN).
 */
export const ZONE_PATTERN = /^[A-Z]{2}\/[A-Z]+$/

/** A region is descriptive (`ca-toronto`): any short name without spaces or quotes. */
export const REGION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/

/** An operator (organisation) name: the same pattern as HQ's operators table. */
export const OPERATOR_PATTERN = /^[A-Za-z0-9][A-Za-z0-9 ._&-]{0,99}$/

export function parseNodeId(s: string): string {
  const id = s.trim()
  if (NODE_ID_PATTERN.test(id)) return id
  const upper = id.toUpperCase()
  throw usageError(
    'NODE_ID_INVALID',
    `${JSON.stringify(s)} is not a node id`,
    NODE_ID_PATTERN.test(upper) ? `node ids are upper case: --node-id ${upper}` : 'a node id is COUNTRY-SITE-NN in upper case, e.g. CH-ZUG-01',
  )
}

export function parseZone(s: string): string {
  const zone = s.trim()
  if (ZONE_PATTERN.test(zone)) return zone
  const fixed = zone.toUpperCase().replace(/[_-]/, '/')
  throw usageError(
    'ZONE_INVALID',
    `${JSON.stringify(s)} is not a zone`,
    ZONE_PATTERN.test(fixed) ? `write the zone as COUNTRY/REGULATOR: --jurisdiction ${fixed}` : 'write the zone as COUNTRY/REGULATOR, e.g. CH/FINMA',
  )
}

export function parseRegion(s: string): string {
  const r = s.trim()
  if (REGION_PATTERN.test(r)) return r
  throw usageError('REGION_INVALID', `${JSON.stringify(s)} is not a region`, 'a region is a short name without spaces, e.g. ca-toronto')
}

export function parseOperator(s: string): string {
  const o = s.trim()
  if (OPERATOR_PATTERN.test(o)) return o
  throw usageError('OPERATOR_INVALID', `${JSON.stringify(s)} is not an operator name`, 'use the organisation name registered at HQ (letters, digits, space, . _ & -)')
}

/** HQ's URL, reduced to its origin (the HQ client ignores any path). */
export function parseHqUrl(s: string): string {
  let u: URL
  try {
    u = new URL(s.trim())
  } catch {
    throw usageError('HQ_URL_INVALID', `${JSON.stringify(s)} is not a URL`, 'pass --hq https://HOST:PORT (or set JIL_HQ_URL)')
  }
  if (u.protocol !== 'https:') throw usageError('HQ_URL_INVALID', `HQ URL ${s} is not https`, 'HQ only speaks HTTPS: pass --hq https://HOST:PORT')
  return u.origin
}

/** REDPANDA_SEEDS: comma-separated HOST:PORT list, as the brokers' clients take it. */
export function parseSeeds(s: string): string {
  const seeds = s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
  const bad = seeds.find((x) => !/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(x))
  if (seeds.length === 0 || bad !== undefined) {
    throw usageError('SEEDS_INVALID', `${JSON.stringify(bad ?? s)} is not a HOST:PORT seed`, 'pass --redpanda-seeds host1:9092,host2:9092')
  }
  return seeds.join(',')
}

/**
 * A CA fingerprint as pinned: `sha256:` + 64 lower-case hex. Upper case and the colon-separated
 * form OpenSSL prints (`AB:CD:…`) are accepted and normalised.
 */
export function parseFingerprint(s: string): string {
  const m = /^(?:sha256:)?([0-9a-f:]+)$/i.exec(s.trim())
  const hex = m?.[1]?.replace(/:/g, '').toLowerCase()
  if (!hex || !/^[0-9a-f]{64}$/.test(hex)) {
    throw usageError('CA_FINGERPRINT_INVALID', `${JSON.stringify(s)} is not a CA fingerprint`, 'pass the sha256:HEX that jil hq init printed (--ca-fingerprint)')
  }
  return `sha256:${hex}`
}

// ---------------------------------------------------------------------------------------------
// node.env

/** The keys of node.env (the seed's unique values plus where HQ and the brokers are). */
export type NodeEnv = {
  JIL_NODE_ID: string
  JIL_REGION: string
  JIL_JURISDICTION: string
  REDPANDA_SEEDS?: string
  JIL_HQ_URL?: string
  JIL_OPERATOR?: string
}

const ENV_KEYS = ['JIL_NODE_ID', 'JIL_REGION', 'JIL_JURISDICTION', 'REDPANDA_SEEDS', 'JIL_HQ_URL', 'JIL_OPERATOR'] as const

/** Values that need no quoting in sh or systemd's EnvironmentFile. */
const BARE = /^[A-Za-z0-9_./:,@%+=-]*$/

/** A value as node.env writes it: bare when it can be, else double-quoted and escaped (parseEnvFile reads it back). */
export function quoteEnvValue(v: string): string {
  if (/[\n\r\0]/.test(v)) throw new JilError('INTERNAL', 'a node.env value contains a line break')
  // Inside double quotes, sh and systemd both take \ " $ ` as escaped by a backslash.
  return BARE.test(v) ? v : `"${v.replace(/[\\"$`]/g, '\\$&')}"`
}

export function formatNodeEnv(env: NodeEnv): string {
  const lines = ['# Written by `jil node init`: this node\'s own values. Edit with `jil node init --force`.']
  for (const k of ENV_KEYS) {
    const v = env[k]
    if (v !== undefined) lines.push(`${k}=${quoteEnvValue(v)}`)
  }
  return lines.join('\n') + '\n'
}

/** Parses KEY=VALUE lines (blank lines and # comments skipped; bare, "double" or 'single' quoted values). */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line)
    if (!m) continue
    let v = m[2]!
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\([\\"$`])/g, '$1')
    else if (v.length >= 2 && v.startsWith("'") && v.endsWith("'")) v = v.slice(1, -1)
    out[m[1]!] = v
  }
  return out
}

/** Reads node.env; a node that was never initialised gets the command that fixes it. */
export async function readNodeEnv(stateDir: string): Promise<NodeEnv> {
  const path = nodePath(stateDir, 'env')
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (systemCode(err) === 'ENOENT') {
      throw new JilError('NODE_NOT_INITIALIZED', `no node config in ${stateDir} (${NODE_FILES.env} is missing)`, {
        hint: 'run jil node init --node-id ID --region R --jurisdiction ZONE (or pass the --state-dir it used)',
      })
    }
    throw fileError(path, 'node config', err)
  }
  const v = parseEnvFile(text)
  const missing = (['JIL_NODE_ID', 'JIL_REGION', 'JIL_JURISDICTION'] as const).filter((k) => !v[k])
  if (missing.length > 0) {
    throw new JilError('NODE_CONFIG_INVALID', `${path} lacks ${missing.join(', ')}`, {hint: 'rewrite it with jil node init --force'})
  }
  return {
    JIL_NODE_ID: v.JIL_NODE_ID!,
    JIL_REGION: v.JIL_REGION!,
    JIL_JURISDICTION: v.JIL_JURISDICTION!,
    ...(v.REDPANDA_SEEDS ? {REDPANDA_SEEDS: v.REDPANDA_SEEDS} : {}),
    ...(v.JIL_HQ_URL ? {JIL_HQ_URL: v.JIL_HQ_URL} : {}),
    ...(v.JIL_OPERATOR ? {JIL_OPERATOR: v.JIL_OPERATOR} : {}),
  }
}

export async function writeNodeEnv(stateDir: string, env: NodeEnv): Promise<void> {
  await writeFileAtomic(nodePath(stateDir, 'env'), formatNodeEnv(env), 0o644)
}

/**
 * The state dir itself: 0755, so that monitoring may read the certificate files; the key is
 * protected by its own 0600 mode.
 */
export async function ensureStateDir(stateDir: string): Promise<void> {
  try {
    await mkdir(stateDir, {recursive: true, mode: 0o755})
  } catch (err) {
    const code = systemCode(err)
    if (code === 'EACCES' || code === 'EPERM') {
      throw new JilError('STATE_DIR_UNWRITABLE', `cannot create the node state dir ${stateDir} (permission denied)`, {
        hint: 'run as root, or pass --state-dir DIR (JIL_STATE_DIR) in a directory you own',
        cause: err,
      })
    }
    throw fileError(stateDir, 'node state dir', err)
  }
}

// ---------------------------------------------------------------------------------------------
// The state-dir lock: init, join and renew never interleave (cron, systemd and a person at the
// shell may all run one at once). A lock whose process is gone is taken over.

export type StateLock = {release(): Promise<void>}

export function lockStateDir(stateDir: string, holder: string): Promise<StateLock> {
  return lockFile(nodePath(stateDir, 'lock'), holder, (other) =>
    new JilError('STATE_DIR_BUSY', `${other.holder} (pid ${other.pid}) is changing the node identity in ${stateDir}`, {
      hint: 'wait for it to finish and try again',
    }),
  )
}

/** Runs fn holding the state-dir lock. */
export async function withStateLock<T>(stateDir: string, holder: string, fn: () => Promise<T>): Promise<T> {
  const lock = await lockStateDir(stateDir, holder)
  try {
    return await fn()
  } finally {
    await lock.release()
  }
}
