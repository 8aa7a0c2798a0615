/** What a backup needs to know of HQ's schema: its tables, their load order, columns, sequences. */
import {checksum, type Migration} from '../../shared/db/migrate.js'
import type {AdvisoryLock, Db, Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {HQ_MIGRATIONS} from '../store/migrations/index.js'

export const LATEST_MIGRATION = Math.max(...HQ_MIGRATIONS.map((m) => m.version))

export type RecordedMigration = {version: number; name: string; checksum: string}

/** Whether the migrations a database (or an archive) records are exactly this jil's, up to their last. */
export function schemaProblem(recorded: readonly RecordedMigration[], migrations: readonly Migration[] = HQ_MIGRATIONS): {code: 'NEWER' | 'MISMATCH' | 'GAP'; version: number} | undefined {
  const ours = new Map(migrations.map((m) => [m.version, m]))
  const seen = new Set<number>()
  for (const r of recorded) {
    const m = ours.get(r.version)
    if (!m) return {code: 'NEWER', version: r.version}
    if (checksum(m.sql) !== r.checksum) return {code: 'MISMATCH', version: r.version}
    seen.add(r.version)
  }
  const top = Math.max(0, ...recorded.map((r) => r.version))
  for (const m of migrations) if (m.version <= top && !seen.has(m.version)) return {code: 'GAP', version: m.version}
  return undefined
}

const IDENT = /^[a-z_][a-z0-9_]*$/

/**
 * HQ's tables once the migrations up to `version` ran, read from the migrations' own DDL (so a new
 * migration's table is backed up without anyone listing it here). schema_migrations is not among
 * them: a restore records it by running the migrations.
 */
export function hqTables(version: number, migrations: readonly Migration[] = HQ_MIGRATIONS): string[] {
  const tables = new Set<string>()
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (m.version > version) break
    const sql = m.sql.replace(/--[^\n]*/g, '')
    for (const x of sql.matchAll(/\b(CREATE|DROP)\s+TABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?=[(;\s])/gi)) {
      const name = x[2]!.toLowerCase()
      if (x[1]!.toUpperCase() === 'CREATE') tables.add(name)
      else tables.delete(name)
    }
    for (const x of sql.matchAll(/\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)\s+RENAME\s+TO\s+([A-Za-z_][A-Za-z0-9_]*)/gi)) {
      tables.delete(x[1]!.toLowerCase())
      tables.add(x[2]!.toLowerCase())
    }
  }
  tables.delete('schema_migrations')
  return [...tables].sort()
}

export function quoteIdent(name: string): string {
  if (!IDENT.test(name)) throw new JilError('INTERNAL', `not a plain identifier: ${JSON.stringify(name)}`, {status: 500})
  return `"${name}"`
}

/** Tables of `tables` that do not exist in the database's current schema. */
export async function missingTables(q: Queryable, tables: readonly string[]): Promise<string[]> {
  const {rows} = await q.query<{name: string}>(
    `SELECT t AS name FROM unnest($1::text[]) AS t
      WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = t AND c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace)`,
    [tables],
  )
  return rows.map((r) => r.name)
}

/** For each of `tables`, the tables (among them) its foreign keys point at. */
export async function foreignKeyParents(q: Queryable, tables: readonly string[]): Promise<Map<string, Set<string>>> {
  const {rows} = await q.query<{child: string; parent: string}>(
    `SELECT c.relname AS child, p.relname AS parent
       FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid
      WHERE k.contype = 'f' AND c.relnamespace = current_schema()::regnamespace AND c.relname <> p.relname`,
  )
  const set = new Set(tables)
  const parents = new Map<string, Set<string>>(tables.map((t) => [t, new Set()]))
  for (const r of rows) if (set.has(r.child) && set.has(r.parent)) parents.get(r.child)!.add(r.parent)
  return parents
}

/** The tables ordered so that each comes after the tables its foreign keys point at (ties by name). */
export function loadOrder(parents: ReadonlyMap<string, ReadonlySet<string>>): string[] {
  const order: string[] = []
  const placed = new Set<string>()
  while (order.length < parents.size) {
    const ready = [...parents.keys()].filter((t) => !placed.has(t) && [...parents.get(t)!].every((p) => placed.has(p))).sort()
    if (ready.length === 0) throw new JilError('INTERNAL', 'the foreign keys of HQ\'s tables form a cycle', {status: 500})
    for (const t of ready) {
      order.push(t)
      placed.add(t)
    }
  }
  return order
}

/** The columns an INSERT may name: all but generated ones, which the database computes again. */
export async function insertableColumns(q: Queryable, table: string): Promise<string[]> {
  const {rows} = await q.query<{name: string}>(
    `SELECT attname AS name FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`,
    [table],
  )
  return rows.map((r) => r.name)
}

/** The sequences behind a table's serial and identity columns. */
export async function tableSequences(q: Queryable, table: string): Promise<{column: string; sequence: string}[]> {
  const {rows} = await q.query<{column: string; sequence: string | null}>(
    `SELECT attname AS column, pg_get_serial_sequence($2, attname) AS sequence
       FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [table, quoteIdent(table)],
  )
  return rows.filter((r): r is {column: string; sequence: string} => r.sequence !== null)
}

/** User triggers that fire on INSERT (they would rewrite restored rows: nodes.config_version is recomputed by one). */
export async function insertTriggers(q: Queryable, table: string): Promise<string[]> {
  const {rows} = await q.query<{name: string}>(`SELECT tgname AS name FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal AND (tgtype & 4) <> 0 ORDER BY tgname`, [table])
  return rows.map((r) => r.name)
}

/**
 * A Db whose every statement runs in one open transaction, so that shared/db/migrate.ts can create
 * the schema inside the restore's transaction: a failed restore leaves no half-made schema behind.
 * Advisory locks become transaction-scoped locks, released when that transaction ends.
 */
export function transactionAsDb(tx: Queryable, kind: Db['kind']): Db {
  const held = (key: bigint | number): AdvisoryLock => ({key: BigInt(key), session: tx, transaction: (fn) => fn(tx), release: async () => {}})
  return {
    kind,
    query: (sql, params) => tx.query(sql, params),
    exec: (sql) => tx.exec(sql),
    transaction: (fn) => fn(tx),
    async advisoryLock(key) {
      await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [BigInt(key).toString()])
      return held(key)
    },
    async tryAdvisoryLock(key) {
      const {rows} = await tx.query<{ok: boolean}>('SELECT pg_try_advisory_xact_lock($1::bigint) AS ok', [BigInt(key).toString()])
      return rows[0]?.ok ? held(key) : null
    },
    listen: () => Promise.reject(new JilError('INTERNAL', 'LISTEN is not available inside a restore', {status: 500})),
    close: async () => {},
  }
}
