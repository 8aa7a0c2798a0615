import {migrate} from '../../shared/db/migrate.js'
import {openPg} from '../../shared/db/pg.js'
import {openPglite} from '../../shared/db/pglite.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {HQ_MIGRATIONS} from './migrations/index.js'

export type HqDbTarget = {databaseUrl: string} | {pgliteDir: string}

/** Opens HQ's database (a PostgreSQL server, or PGlite in the data dir) and brings its schema up to date. */
export async function openHqDb(target: HqDbTarget): Promise<Db> {
  const db = 'databaseUrl' in target ? await openPg(target.databaseUrl, {applicationName: 'jil-hq'}) : await openPglite(target.pgliteDir)
  try {
    await migrate(db, HQ_MIGRATIONS)
    return db
  } catch (err) {
    await db.close().catch(() => {})
    throw err
  }
}

/** Which CA this database belongs to; HQ refuses to serve a database of another installation. */
export async function getMeta(q: Queryable, key: string): Promise<string | undefined> {
  const {rows} = await q.query<{value: string}>('SELECT value FROM hq_meta WHERE key = $1', [key])
  return rows[0]?.value
}

export async function setMeta(q: Queryable, key: string, value: string): Promise<void> {
  await q.query(
    `INSERT INTO hq_meta (key, value) VALUES ($1, $2)
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
    [key, value],
  )
}

export async function assertDbBelongsTo(q: Queryable, caFingerprint: string): Promise<void> {
  const stored = await getMeta(q, 'ca_fingerprint')
  if (stored !== caFingerprint) {
    throw new JilError(
      'DB_MISMATCH',
      stored ? `the database belongs to another HQ (CA ${stored})` : 'the database has not been initialised by jil hq init',
      {hint: 'use the --database-url this HQ was initialised with'},
    )
  }
}

export type CertRow = {
  serial: string
  kind: 'user' | 'node' | 'server'
  subject: string
  fingerprint: string
  not_before: Date
  not_after: Date
}

export async function recordCertificate(q: Queryable, c: CertRow): Promise<void> {
  await q.query(
    `INSERT INTO certificates (serial, kind, subject, fingerprint, not_before, not_after)
     VALUES ($1, $2, $3, $4, $5, $6)`,
    [c.serial, c.kind, c.subject, c.fingerprint, c.not_before, c.not_after],
  )
}

export async function listZones(q: Queryable): Promise<{code: string; country: string; regulator: string; name: string}[]> {
  const {rows} = await q.query<{code: string; country: string; regulator: string; name: string}>(
    'SELECT code, country, regulator, name FROM zones ORDER BY code',
  )
  return rows
}
