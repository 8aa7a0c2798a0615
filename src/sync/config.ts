import {usageError} from '../shared/errors.js'
import {DEFAULT_SYNC_TABLES, parseSyncTables, type SyncTable} from './tables.js'

/** Event sync on a node: off unless JIL_SYNC_TRANSPORT names a transport. */
export type SyncSettings = {
  transport: 'postgres-log' | 'kafka'
  /** The node's own PostgreSQL, where its services keep their data (JIL_NODE_DATABASE_URL). */
  nodeDatabaseUrl: string
  /** postgres-log: the shared PostgreSQL database holding the log (JIL_SYNC_LOG_URL). */
  logUrl: string | undefined
  /** kafka: the brokers (REDPANDA_SEEDS, HOST:PORT,…). */
  seeds: string[]
  tables: SyncTable[]
  /** Partitions of each topic the node creates (JIL_SYNC_PARTITIONS, default 6). */
  partitions: number
  /**
   * Events per applier transaction at most (JIL_SYNC_BATCH, default 5000): a replay goes in batches
   * this large, while a node in step applies what has come, a few at a time. The relay publishes in
   * rounds of at most 1000 (a broker's record-batch limit is about 1 MB).
   */
  batch: number
}

export const SYNC_ENV = {
  transport: 'JIL_SYNC_TRANSPORT',
  nodeDatabaseUrl: 'JIL_NODE_DATABASE_URL',
  logUrl: 'JIL_SYNC_LOG_URL',
  seeds: 'REDPANDA_SEEDS',
  tables: 'JIL_SYNC_TABLES',
  partitions: 'JIL_SYNC_PARTITIONS',
  batch: 'JIL_SYNC_BATCH',
} as const

function int(v: string | undefined, d: number, name: string, min: number, max: number): number {
  if (v === undefined || v.trim() === '') return d
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max) throw usageError('SETTING_INVALID', `${name} ${JSON.stringify(v)} is not a whole number from ${min} to ${max}`, `set ${name} to a number in that range`)
  return n
}

/** The sync settings from a merged key/value view (node.env overlaid by the environment); undefined = sync off. */
export function syncSettingsFrom(v: Readonly<Record<string, string | undefined>>): SyncSettings | undefined {
  const get = (k: keyof typeof SYNC_ENV): string | undefined => {
    const x = v[SYNC_ENV[k]]?.trim()
    return x ? x : undefined
  }
  const transport = get('transport')
  if (transport === undefined || transport === 'off') return undefined
  if (transport !== 'postgres-log' && transport !== 'kafka') {
    throw usageError('SETTING_INVALID', `${SYNC_ENV.transport} ${JSON.stringify(transport)} is not a transport`, `set ${SYNC_ENV.transport} to kafka (RedPanda), postgres-log or off`)
  }
  const nodeDatabaseUrl = get('nodeDatabaseUrl')
  if (!nodeDatabaseUrl) throw usageError('SETTING_MISSING', `event sync needs the node's database: ${SYNC_ENV.nodeDatabaseUrl} is not set`, `set ${SYNC_ENV.nodeDatabaseUrl}=postgres://… (the services' PostgreSQL)`)
  const logUrl = get('logUrl')
  if (transport === 'postgres-log' && !logUrl) throw usageError('SETTING_MISSING', `the postgres-log transport needs ${SYNC_ENV.logUrl}`, `set ${SYNC_ENV.logUrl}=postgres://… (a database shared by the nodes)`)
  const seeds = (get('seeds') ?? '').split(',').map((s) => s.trim()).filter(Boolean)
  if (transport === 'kafka' && seeds.length === 0) throw usageError('SETTING_MISSING', `the kafka transport needs ${SYNC_ENV.seeds}`, `set ${SYNC_ENV.seeds}=host1:9093,host2:9093`)
  const tables = get('tables')
  return {
    transport,
    nodeDatabaseUrl,
    logUrl,
    seeds,
    tables: tables ? parseSyncTables(tables) : DEFAULT_SYNC_TABLES.map((t) => ({...t, key: [...t.key]})),
    partitions: int(get('partitions'), 6, SYNC_ENV.partitions, 1, 256),
    batch: int(get('batch'), 5000, SYNC_ENV.batch, 1, 50_000),
  }
}
