import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {systemCode, usageError} from '../shared/errors.js'
import {syncSettingsFrom, type SyncSettings} from '../sync/config.js'
import {nodePath, parseEnvFile} from './config.js'

/**
 * How the node's agents and daemon behave: the same on every node, so not among node.env's unique
 * values, but settable the same way (DESIGN.md §10: flags > JIL_* environment > config file). Any
 * of these JIL_* keys may also sit in node.env (systemd's EnvironmentFile and cron read it too).
 */
export type NodeSettings = {
  /** The Docker engine: `unix:///path`, `tcp://host:port`, or empty for the default socket. */
  dockerHost: string | undefined
  /** Where `/healthz` and `/metrics` listen: HOST:PORT on this machine (JIL_HEALTHZ_LISTEN). */
  healthzListen: {host: string; port: number}
  /** Agent schedules of the daemon (cron has its own, install-cron.sh). */
  schedule: {healthMs: number; securityMs: number; updateMs: number; maintenanceAtUtc: {hour: number; minute: number}}
  /** Up to this much random delay before each scheduled run, so a fleet does not call HQ at one instant. */
  jitterMs: number
  /** The node's log dir (maintenance rotates files here). */
  logDir: string
  /** Rotate a log file above this size; keep this many rotated files. */
  logMaxBytes: number
  logKeep: number
  /** Temp dirs whose files older than tempMaxAgeMs maintenance deletes. */
  tempDirs: string[]
  tempMaxAgeMs: number
  /** Disk use (percent) at which maintenance warns. */
  diskWarnPercent: number
  /** The path whose filesystem counts as "the disk" (the Docker data root usually lives there). */
  diskPath: string
  /** CometBFT RPC base URL (`http://127.0.0.1:26657`) for the consensus block of the heartbeat. */
  cometbftUrl: string | undefined
  /** TCP/UDP ports allowed to listen on the host; others are a security finding. */
  portAllowlist: number[]
  sshdConfig: string
  /** A service restarted this many times within restartWindowMs is crash-looping: reported, not restarted. */
  restartBudget: number
  restartWindowMs: number
  /** How long the update agent waits for a replacement container to become healthy. */
  updateHealthTimeoutMs: number
  /** Running this long counts as started, for a service without a health check (its grace_s wins). */
  updateGraceMs: number
  /** Between /healthz failing (stopped) and the services stopping: the load balancer drains the node meanwhile. */
  drainMs: number
  /** What a fleet `reboot` command runs on the host (sh -c); unset: reboot is reported, not done. */
  rebootCommand: string | undefined
  /**
   * Whether the health run picks up fleet commands (cron mode). Not an environment setting: the
   * daemon turns it off, because its own command loop long-polls them.
   */
  commandsInHealthRun: boolean
  /** Event sync (relay and applier in the daemon); undefined when JIL_SYNC_TRANSPORT is unset or off. */
  sync?: SyncSettings | undefined
}

export const SETTINGS_ENV = {
  dockerHost: 'JIL_DOCKER_HOST',
  healthzListen: 'JIL_HEALTHZ_LISTEN',
  healthEvery: 'JIL_HEALTH_EVERY',
  securityEvery: 'JIL_SECURITY_EVERY',
  updateEvery: 'JIL_UPDATE_EVERY',
  maintenanceAt: 'JIL_MAINTENANCE_AT',
  jitter: 'JIL_JITTER',
  logDir: 'JIL_LOG_DIR',
  logMaxBytes: 'JIL_LOG_MAX_BYTES',
  logKeep: 'JIL_LOG_KEEP',
  tempDirs: 'JIL_TEMP_DIRS',
  tempMaxAge: 'JIL_TEMP_MAX_AGE',
  diskWarnPercent: 'JIL_DISK_WARN_PERCENT',
  diskPath: 'JIL_DISK_PATH',
  cometbftUrl: 'JIL_COMETBFT_URL',
  portAllowlist: 'JIL_PORT_ALLOWLIST',
  sshdConfig: 'JIL_SSHD_CONFIG',
  restartBudget: 'JIL_RESTART_BUDGET',
  restartWindow: 'JIL_RESTART_WINDOW',
  updateHealthTimeout: 'JIL_UPDATE_HEALTH_TIMEOUT',
  updateGrace: 'JIL_UPDATE_GRACE',
  drain: 'JIL_DRAIN',
  rebootCommand: 'JIL_REBOOT_COMMAND',
} as const

/** `90s`, `5m`, `6h`, `7d`, `250ms` → milliseconds. */
export function parseDuration(s: string, what: string, min = 1): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(s.trim())
  if (!m) throw usageError('DURATION_INVALID', `${what} ${JSON.stringify(s)} is not a duration`, 'write durations like 250ms, 60s, 5m, 6h, 7d')
  const unit = {ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000}[m[2] as 'ms' | 's' | 'm' | 'h' | 'd']
  const ms = Math.round(Number(m[1]) * unit)
  if (ms < min) throw usageError('DURATION_INVALID', `${what} ${JSON.stringify(s)} is not a positive duration`, 'write durations like 250ms, 60s, 5m, 6h, 7d')
  return ms
}

function parseListen(s: string): {host: string; port: number} {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(s.trim())
  const port = m ? Number(m[3]) : NaN
  if (!m || port > 65535) throw usageError('LISTEN_INVALID', `${SETTINGS_ENV.healthzListen} ${JSON.stringify(s)} is not HOST:PORT`, 'e.g. 127.0.0.1:9464 (port 0 picks a free one)')
  return {host: (m[1] ?? m[2])!, port}
}

function parseInteger(s: string, what: string, min: number, max: number): number {
  const n = Number(s)
  if (!Number.isInteger(n) || n < min || n > max) throw usageError('SETTING_INVALID', `${what} ${JSON.stringify(s)} is not a whole number from ${min} to ${max}`, `set ${what} to a number in that range`)
  return n
}

function parseTimeOfDay(s: string): {hour: number; minute: number} {
  const m = /^(\d{1,2}):(\d{2})$/.exec(s.trim())
  const hour = Number(m?.[1])
  const minute = Number(m?.[2])
  if (!m || hour > 23 || minute > 59) throw usageError('SETTING_INVALID', `${SETTINGS_ENV.maintenanceAt} ${JSON.stringify(s)} is not HH:MM (UTC)`, 'e.g. 02:00')
  return {hour, minute}
}

function parsePorts(s: string): number[] {
  const ports = s
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => parseInteger(p, SETTINGS_ENV.portAllowlist, 1, 65535))
  return [...new Set(ports)].sort((a, b) => a - b)
}

/**
 * The settings from a merged key/value view (node.env's keys overlaid by the process environment).
 * Bad values are usage errors naming the variable.
 */
export function settingsFrom(stateDir: string, v: Readonly<Record<string, string | undefined>>): NodeSettings {
  const get = (k: keyof typeof SETTINGS_ENV): string | undefined => {
    const x = v[SETTINGS_ENV[k]]
    return x === undefined || x.trim() === '' ? undefined : x
  }
  const dur = (k: keyof typeof SETTINGS_ENV, d: string, min = 1) => parseDuration(get(k) ?? d, SETTINGS_ENV[k], min)
  const healthzListen = parseListen(get('healthzListen') ?? '127.0.0.1:9464')
  return {
    dockerHost: get('dockerHost') ?? v.DOCKER_HOST,
    healthzListen,
    schedule: {
      healthMs: dur('healthEvery', '60s'),
      securityMs: dur('securityEvery', '6h'),
      updateMs: dur('updateEvery', '4h'),
      maintenanceAtUtc: parseTimeOfDay(get('maintenanceAt') ?? '02:00'),
    },
    jitterMs: dur('jitter', '10s', 0),
    logDir: get('logDir') ?? join(stateDir, 'log'),
    logMaxBytes: parseInteger(get('logMaxBytes') ?? String(100 * 1024 * 1024), SETTINGS_ENV.logMaxBytes, 1024, 2 ** 50),
    logKeep: parseInteger(get('logKeep') ?? '5', SETTINGS_ENV.logKeep, 1, 1000),
    tempDirs: (get('tempDirs') ?? '').split(':').filter(Boolean),
    tempMaxAgeMs: dur('tempMaxAge', '7d'),
    diskWarnPercent: parseInteger(get('diskWarnPercent') ?? '85', SETTINGS_ENV.diskWarnPercent, 1, 100),
    diskPath: get('diskPath') ?? stateDir,
    cometbftUrl: get('cometbftUrl'),
    portAllowlist: parsePorts(get('portAllowlist') ?? `22,443${healthzListen.port ? `,${healthzListen.port}` : ''}`),
    sshdConfig: get('sshdConfig') ?? '/etc/ssh/sshd_config',
    restartBudget: parseInteger(get('restartBudget') ?? '5', SETTINGS_ENV.restartBudget, 1, 1000),
    restartWindowMs: dur('restartWindow', '1h'),
    updateHealthTimeoutMs: dur('updateHealthTimeout', '2m'),
    updateGraceMs: dur('updateGrace', '10s'),
    drainMs: dur('drain', '30s', 0),
    rebootCommand: get('rebootCommand'),
    commandsInHealthRun: true,
    sync: syncSettingsFrom(v),
  }
}

/** Settings for a node: node.env's JIL_* keys, overlaid by the environment (flags are applied by the caller). */
export async function loadSettings(stateDir: string, env: NodeJS.ProcessEnv = process.env): Promise<NodeSettings> {
  let file: Record<string, string> = {}
  try {
    file = parseEnvFile(await readFile(nodePath(stateDir, 'env'), 'utf8'))
  } catch (err) {
    if (systemCode(err) !== 'ENOENT') throw err
  }
  return settingsFrom(stateDir, {...file, ...env})
}
