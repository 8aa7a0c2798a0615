import {createHash} from 'node:crypto'

import {JilError} from '../errors.js'
import {LOCKS, type Db} from './types.js'

export type Migration = {version: number; name: string; sql: string}

export type MigrateResult = {applied: number[]; current: number}

/**
 * Applies the migrations not yet recorded, in order, each in its own transaction, under an
 * advisory lock so that HQ replicas starting together on one database do not race. Idempotent.
 * Refuses a database migrated by a newer jil, or one whose recorded migration differs from ours.
 */
export async function migrate(db: Db, migrations: readonly Migration[], opts: {table?: string} = {}): Promise<MigrateResult> {
  // A database shared with other software (the node's, where its services keep their own
  // migrations) records ours under a name of our own.
  const table = opts.table ?? 'schema_migrations'
  if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new RangeError(`bad migrations table name: ${table}`)
  const sorted = [...migrations].sort((a, b) => a.version - b.version)
  const lock = await db.advisoryLock(LOCKS.migrate)
  try {
    await db.exec(`CREATE TABLE IF NOT EXISTS ${table} (
      version integer PRIMARY KEY,
      name text NOT NULL,
      checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`)
    const {rows} = await db.query<{version: number; name: string; checksum: string}>(
      `SELECT version, name, checksum FROM ${table} ORDER BY version`,
    )
    const known = new Map(sorted.map((m) => [m.version, m]))
    for (const row of rows) {
      const ours = known.get(row.version)
      if (!ours) {
        throw new JilError('DB_SCHEMA_NEWER', `the database has migration ${row.version} (${row.name}), which this jil does not know`, {
          hint: 'run the jil version that migrated this database, or a newer one',
          status: 500,
        })
      }
      if (row.checksum !== checksum(ours.sql)) {
        throw new JilError('DB_SCHEMA_MISMATCH', `migration ${row.version} (${row.name}) in the database differs from this jil's`, {
          hint: 'this database was migrated by a different build of jil; use a matching build',
          status: 500,
        })
      }
    }
    const done = new Set(rows.map((r) => r.version))
    const applied: number[] = []
    for (const m of sorted) {
      if (done.has(m.version)) continue
      await db.transaction(async (tx) => {
        await tx.exec(m.sql)
        await tx.query(`INSERT INTO ${table} (version, name, checksum) VALUES ($1, $2, $3)`, [
          m.version,
          m.name,
          checksum(m.sql),
        ])
      })
      applied.push(m.version)
    }
    return {applied, current: sorted.at(-1)?.version ?? 0}
  } finally {
    await lock.release()
  }
}

/** A migration's checksum as the migrations table records it. */
export function checksum(sql: string): string {
  return createHash('sha256').update(sql).digest('hex')
}
