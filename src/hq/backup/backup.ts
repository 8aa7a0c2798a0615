import {createHash, randomBytes} from 'node:crypto'
import {open, readdir, readFile, rename, rm, stat} from 'node:fs/promises'
import {basename, dirname, join} from 'node:path'

import type {Clock} from '../../shared/clock.js'
import {openPg, redactUrl} from '../../shared/db/pg.js'
import {openPglite} from '../../shared/db/pglite.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError, systemCode} from '../../shared/errors.js'
import {exists, fileError} from '../../shared/files.js'
import {hqPath, lockDataDir, readHqConfig, type DataDirLock} from '../datadir.js'
import {assertDbBelongsTo} from '../store/index.js'
import {ArchiveWriter, FORMAT, FRAME} from './format.js'
import {fileMember, REQUIRED_FILES, safeFileName, tableMember, type BackupManifest, type ManifestMember, type MemberStart} from './manifest.js'
import {foreignKeyParents, hqTables, loadOrder, missingTables, quoteIdent, schemaProblem, tableSequences, type RecordedMigration} from './schema.js'

export type HqBackupOptions = {
  dataDir: string
  /** The PostgreSQL HQ stores its state in (default: config.json's; else the embedded database, which needs HQ stopped). */
  databaseUrl?: string | undefined
  out: string
  /** Encrypts the archive; undefined writes it in the clear (it then holds HQ's private keys readable by whoever reads the file). */
  passphrase?: string | undefined
  /** Replace an existing --out file (atomically, once the new archive is complete). */
  force?: boolean
  clock: Clock
  /** The jil version recorded in the manifest. */
  version: string
  progress?: (line: string) => void
  /** Heap pages read per query at first; adapted to aim at a few thousand rows per query. */
  batchPages?: number
}

export type HqBackupResult = {
  file: string
  bytes: number
  tables: Record<string, number>
  audit_entries: number
  encrypted: boolean
  created_at: string
  migration_version: number
  database: 'embedded' | 'postgresql'
  /** The data dir's files in the archive. */
  files: string[]
}

/** A data dir file larger than this is not one of HQ's (keys, certificates, config are a few KiB). */
const MAX_FILE = 16 * 1024 * 1024

/**
 * Writes one archive holding HQ's data dir files and a consistent dump of its database. With a
 * PostgreSQL server this runs while HQ serves: every table is read inside one REPEATABLE READ,
 * read-only transaction, so the audit ledger, its checkpoints and the fleet tables agree. The
 * embedded database has one opener, so HQ must be stopped: the data dir's lock is taken as
 * `hq serve` takes it. The archive is written to a temporary file and renamed into place.
 */
export async function backupHq(o: HqBackupOptions): Promise<HqBackupResult> {
  const say = o.progress ?? (() => {})
  const config = await readHqConfig(o.dataDir)
  const databaseUrl = o.databaseUrl ?? config.database_url
  const existing = await stat(o.out).catch(() => undefined)
  if (existing && !existing.isFile()) throw new JilError('FILE_INVALID', `${o.out} exists and is not a file`, {hint: 'pass the path of the archive file to write, e.g. --out /backups/hq-2026-11-28.jilbak'})
  if (existing && !o.force) {
    throw new JilError('FILE_EXISTS', `${o.out} already exists`, {hint: 'pick a new --out file (e.g. with the date in its name), or pass --force to replace it'})
  }
  let lock: DataDirLock | undefined
  if (!databaseUrl) {
    try {
      lock = await lockDataDir(o.dataDir, 'jil hq backup')
    } catch (err) {
      if (err instanceof JilError && err.code === 'DATA_DIR_LOCKED') {
        throw new JilError('DATA_DIR_LOCKED', err.message, {hint: 'stop jil hq serve first, or back up a PostgreSQL-backed HQ online', cause: err})
      }
      throw err
    }
  }
  const tmp = join(dirname(o.out), `.${basename(o.out)}.tmp-${randomBytes(4).toString('hex')}`)
  let db: Db | undefined
  let writer: ArchiveWriter | undefined
  try {
    // Read before and after the database snapshot: unchanged files (no key rotation, no certificate
    // renewal meanwhile) are the files the snapshot's rows go with.
    const before = await readDataDirFiles(o.dataDir)
    say(databaseUrl ? `reading PostgreSQL at ${redactUrl(databaseUrl)}` : 'reading the embedded database')
    // PGlite would make a new, empty database where none is: that is no backup of this HQ.
    if (!databaseUrl && !(await exists(join(hqPath(o.dataDir, 'db'), 'PG_VERSION')))) {
      throw new JilError('DATA_DIR_CORRUPT', `HQ's data dir ${o.dataDir} has no embedded database and config.json names no PostgreSQL`, {
        hint: 'pass the --database-url this HQ uses, or the data dir it serves from',
      })
    }
    db = databaseUrl ? await openPg(databaseUrl, {max: 2, applicationName: 'jil-hq-backup'}) : await openPglite(hqPath(o.dataDir, 'db'))
    try {
      writer = await ArchiveWriter.create(tmp, o.passphrase)
    } catch (err) {
      throw new JilError('FILE_UNWRITABLE', `cannot write ${o.out}: ${systemCode(err) ?? String(err)}`, {hint: 'pick an --out in a directory you can write to', cause: err})
    }
    const createdAt = o.clock.now().toISOString()
    await writer.json(FRAME.prelude, {format: FORMAT, jil_version: o.version, created_at: createdAt})
    const members: ManifestMember[] = []
    const w = writer
    const dump = await db.transaction(async (tx) => {
      // One snapshot for every table: taken at the first query after this.
      await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY')
      await assertDbBelongsTo(tx, config.ca_fingerprint)
      const migrations = (await tx.query<RecordedMigration>('SELECT version, name, checksum FROM schema_migrations ORDER BY version')).rows
      const problem = schemaProblem(migrations)
      if (problem?.code === 'NEWER') {
        throw new JilError('DB_SCHEMA_NEWER', `the database has migration ${problem.version}, which this jil does not know`, {hint: 'back up with the jil version HQ runs'})
      }
      if (problem) throw new JilError('DB_SCHEMA_MISMATCH', `migration ${problem.version} in the database differs from this jil's`, {hint: 'back up with the jil version HQ runs'})
      const version = Math.max(0, ...migrations.map((m) => m.version))
      const tables = hqTables(version)
      const missing = await missingTables(tx, tables)
      if (missing.length > 0) {
        throw new JilError('DB_SCHEMA_MISMATCH', `HQ's table ${missing[0]} is missing from the database`, {hint: 'the database was changed by hand; restore it from an earlier backup'})
      }
      const counts: Record<string, number> = {}
      const sequences: Record<string, number> = {}
      // Dependency order, so a restore can load the tables as they come.
      for (const t of loadOrder(await foreignKeyParents(tx, tables))) {
        const m = await dumpTable(tx, w, t, o.batchPages ?? 64)
        members.push(m)
        counts[t] = m.rows
        for (const s of await tableSequences(tx, t)) {
          const {rows} = await tx.query<{last_value: number; is_called: boolean}>(`SELECT last_value, is_called FROM ${s.sequence}`)
          sequences[`${t}.${s.column}`] = rows[0]?.is_called ? Number(rows[0].last_value) : 0
        }
      }
      say(`dumped ${tables.length} tables (${Object.values(counts).reduce((a, b) => a + b, 0)} rows, ${counts.audit_log ?? 0} audit entries)`)
      return {migrations, version, counts, sequences}
    })
    const after = await readDataDirFiles(o.dataDir)
    if (!sameFiles(before, after)) {
      throw new JilError('BACKUP_DATA_DIR_CHANGED', `HQ's data dir changed during the backup (a key rotation or certificate renewal)`, {hint: 'run the backup again'})
    }
    for (const f of before) {
      const start: MemberStart = {name: fileMember(f.file), kind: 'file', file: f.file, mode: f.mode}
      await writer.json(FRAME.begin, start)
      await writer.data(f.bytes)
      members.push({...start, bytes: f.bytes.length, sha256: f.sha256})
    }
    const manifest: BackupManifest = {
      format: FORMAT,
      jil_version: o.version,
      created_at: createdAt,
      ca_fingerprint: config.ca_fingerprint,
      database: databaseUrl ? 'postgresql' : 'embedded',
      migration_version: dump.version,
      migrations: dump.migrations,
      members,
      tables: dump.counts,
      sequences: dump.sequences,
      audit_entries: dump.counts.audit_log ?? 0,
      audit_checkpoints: dump.counts.audit_checkpoints ?? 0,
    }
    await writer.json(FRAME.manifest, manifest)
    await writer.finish()
    await rename(tmp, o.out)
    await syncDir(dirname(o.out))
    const {size} = await stat(o.out)
    say(`wrote ${o.out} (${size} bytes${o.passphrase === undefined ? '' : ', encrypted'})`)
    return {
      file: o.out,
      bytes: size,
      tables: dump.counts,
      audit_entries: manifest.audit_entries,
      encrypted: o.passphrase !== undefined,
      created_at: createdAt,
      migration_version: dump.version,
      database: manifest.database,
      files: before.map((f) => f.file),
    }
  } catch (err) {
    writer?.abort()
    await rm(tmp, {force: true})
    throw err
  } finally {
    await db?.close().catch(() => {})
    await lock?.release()
  }
}

/**
 * Streams one table as NDJSON (row_to_json per row) in batches of heap pages: `ctid` ranges need no
 * primary key (node_heartbeat_history has none), no sort, and within one snapshot every visible row
 * stays where it is. The count in the same snapshot proves nothing was skipped.
 */
async function dumpTable(tx: Queryable, w: ArchiveWriter, table: string, firstPages: number): Promise<ManifestMember & {kind: 'table'}> {
  const name = tableMember(table)
  const start: MemberStart = {name, kind: 'table', table}
  await w.json(FRAME.begin, start)
  const q = quoteIdent(table)
  const hash = createHash('sha256')
  let bytes = 0
  let rows = 0
  const size = await tx.query<{pages: number}>(`SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int8 AS pages`, [table])
  const pages = Number(size.rows[0]?.pages ?? 0)
  let step = Math.max(1, firstPages)
  for (let p = 0; p < pages; ) {
    const res = await tx.query<{j: string}>(`SELECT row_to_json(t)::text AS j FROM ONLY ${q} AS t WHERE ctid >= $1::tid AND ctid < $2::tid`, [`(${p},0)`, `(${p + step},0)`])
    p += step
    if (res.rows.length > 0) {
      // A raw newline can only be whitespace inside a json (not jsonb) value: re-serialise that row so each row stays one line.
      const text = res.rows.map((r) => (r.j.includes('\n') ? JSON.stringify(JSON.parse(r.j)) : r.j)).join('\n') + '\n'
      const buf = Buffer.from(text)
      hash.update(buf)
      bytes += buf.length
      rows += res.rows.length
      await w.data(buf)
    }
    if (res.rows.length > 4000 && step > 1) step = Math.max(1, step >> 1)
    else if (res.rows.length < 1000 && step < 8192) step *= 2
  }
  const count = await tx.query<{n: number}>(`SELECT count(*) AS n FROM ONLY ${q}`)
  if (Number(count.rows[0]?.n) !== rows) {
    throw new JilError('BACKUP_INCONSISTENT', `dumped ${rows} rows of ${table} but it has ${count.rows[0]?.n}`, {status: 500, hint: 'this is a bug in jil; report it with the database version'})
  }
  return {...start, bytes, sha256: hash.digest('hex'), rows}
}

type DirFile = {file: string; mode: number; bytes: Buffer; sha256: string}

/**
 * The data dir's files: every regular file at its top level (the keys, certificates, config.json,
 * the admin bundle, retired signing keys signing-KEYID.key, a pending certificate swap), but never
 * the lock file, temporary files, or the embedded database's directory.
 */
async function readDataDirFiles(dir: string): Promise<DirFile[]> {
  const entries = await readdir(dir, {withFileTypes: true})
  const files: DirFile[] = []
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!e.isFile() || !safeFileName(e.name) || /\.tmp-|\.stale-/.test(e.name)) continue
    const path = join(dir, e.name)
    let bytes: Buffer
    let mode: number
    try {
      const st = await stat(path)
      if (st.size > MAX_FILE) {
        throw new JilError('FILE_TOO_LARGE', `${path} is ${st.size} bytes: not one of HQ's files`, {hint: `move ${path} out of HQ's data dir`})
      }
      mode = st.mode & 0o777
      bytes = await readFile(path)
    } catch (err) {
      if (err instanceof JilError) throw err
      throw fileError(path, 'HQ data dir file', err)
    }
    files.push({file: e.name, mode, bytes, sha256: createHash('sha256').update(bytes).digest('hex')})
  }
  const missing = REQUIRED_FILES.find((f) => !files.some((x) => x.file === f))
  if (missing) throw new JilError('DATA_DIR_CORRUPT', `HQ's data dir ${dir} has no ${missing}`, {hint: 'the data dir is incomplete; back up the one HQ serves from'})
  return files
}

/** Makes the rename itself durable: a crash right after a backup must not lose the archive's name. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

function sameFiles(a: DirFile[], b: DirFile[]): boolean {
  return a.length === b.length && a.every((f, i) => f.file === b[i]!.file && f.sha256 === b[i]!.sha256)
}
