import {migrate, type Migration, type MigrateResult} from '../shared/db/migrate.js'
import type {Db} from '../shared/db/types.js'
import m001 from './sql/001_outbox.sql'
import m002 from './sql/002_apply.sql'
import m003 from './sql/003_status.sql'

/**
 * jil's schema in the NODE's database (JIL_NODE_DATABASE_URL), separate from HQ's migrations: the
 * outbox and jil_emit() that services call, and the applier's bookkeeping. Applied ones never change.
 */
export const NODE_SYNC_MIGRATIONS: readonly Migration[] = [
  {version: 1, name: 'outbox', sql: m001},
  {version: 2, name: 'apply', sql: m002},
  {version: 3, name: 'status', sql: m003},
]

/** The node database is shared with the services' own migrations: ours are recorded apart. */
export const NODE_SYNC_MIGRATIONS_TABLE = 'jil_sync_migrations'

/** Applies jil's node migrations (idempotent, under an advisory lock) and records this node as the source. */
export async function migrateNodeDb(db: Db, sourceId: string): Promise<MigrateResult> {
  const r = await migrate(db, NODE_SYNC_MIGRATIONS, {table: NODE_SYNC_MIGRATIONS_TABLE})
  await db.query(
    `INSERT INTO jil_sync_node (source_id) VALUES ($1)
     ON CONFLICT (id) DO UPDATE SET source_id = EXCLUDED.source_id`,
    [sourceId],
  )
  return r
}
