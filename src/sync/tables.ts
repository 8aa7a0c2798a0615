import {usageError} from '../shared/errors.js'
import {TABLE_NAME_PATTERN} from '../shared/sync-envelope.js'

/** A table that syncs between nodes: its name, key columns (in order) and the version column. */
export type SyncTable = {name: string; key: string[]; version: string}

/**
 * The default list: the seed's `jil.state.sync.*` tables. The seed counts nine but names only three
 * ("settlements, wallet_accounts, compliance_decisions, etc."); the others are declared per node
 * (JIL_SYNC_TABLES) until the services' schemas name them.
 */
export const DEFAULT_SYNC_TABLES: readonly SyncTable[] = [
  {name: 'settlements', key: ['id'], version: 'version'},
  {name: 'wallet_accounts', key: ['id'], version: 'version'},
  {name: 'compliance_decisions', key: ['id'], version: 'version'},
]

const COLUMN = /^[a-z_][a-z0-9_]{0,62}$/

/**
 * JIL_SYNC_TABLES: comma-separated `table[:key1+key2[:version_column]]`, e.g.
 * `settlements:id:version,wallet_accounts:account_id`. Key defaults to `id`, version to `version`.
 */
export function parseSyncTables(s: string): SyncTable[] {
  const out: SyncTable[] = []
  for (const entry of s.split(',').map((x) => x.trim()).filter(Boolean)) {
    const [name, key, version, ...rest] = entry.split(':').map((x) => x.trim())
    const keys = (key || 'id').split('+').map((k) => k.trim())
    const v = version || 'version'
    if (rest.length > 0 || !name || !TABLE_NAME_PATTERN.test(name) || !keys.every((k) => COLUMN.test(k)) || !COLUMN.test(v) || keys.length > 16) {
      throw usageError('SYNC_TABLES_INVALID', `JIL_SYNC_TABLES entry ${JSON.stringify(entry)} is not table[:key1+key2[:version_column]]`, 'e.g. JIL_SYNC_TABLES=settlements:id:version,wallet_accounts:account_id')
    }
    if (keys.includes(v)) throw usageError('SYNC_TABLES_INVALID', `JIL_SYNC_TABLES entry ${JSON.stringify(entry)}: the version column cannot be a key column`, 'name a separate version column')
    if (out.some((t) => t.name === name)) throw usageError('SYNC_TABLES_INVALID', `JIL_SYNC_TABLES names ${name} twice`, 'declare each table once')
    out.push({name, key: keys, version: v})
  }
  if (out.length === 0) throw usageError('SYNC_TABLES_INVALID', 'JIL_SYNC_TABLES declares no table', 'unset it for the default list, or name tables')
  return out
}
