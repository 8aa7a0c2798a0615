import {createHash, randomBytes} from 'node:crypto'
import {chmod, mkdir, readdir, rename, rm, rmdir, stat, writeFile} from 'node:fs/promises'
import {basename, dirname, join} from 'node:path'

import {auditOrigin} from '../../shared/audit.js'
import {checkpointKeyFromPem, LedgerVerifier, type AuditVerifyReport} from '../../shared/audit-verify.js'
import type {Clock} from '../../shared/clock.js'
import {migrate} from '../../shared/db/migrate.js'
import {openPg, redactUrl} from '../../shared/db/pg.js'
import {openPglite} from '../../shared/db/pglite.js'
import {LOCKS, type Db, type Queryable} from '../../shared/db/types.js'
import {JilError, messageOf, systemCode} from '../../shared/errors.js'
import {fileError} from '../../shared/files.js'
import {certFingerprint} from '../../shared/pki.js'
import {LOG_COLUMNS, toCheckpoint, toEntry} from '../audit/ledger.js'
import {HQ_FILES, lockDataDir, writeHqConfig, type HqConfig} from '../datadir.js'
import {HQ_MIGRATIONS} from '../store/migrations/index.js'
import {corrupt, FRAME, isObject, MemberLines, openArchive, truncated, type Frame, type KeyCache} from './format.js'
import {fileMember, REQUIRED_FILES, restoredMode, safeFileName, tableMember, type BackupManifest, type ManifestMember, type MemberStart} from './manifest.js'
import {
  foreignKeyParents,
  hqTables,
  insertableColumns,
  insertTriggers,
  LATEST_MIGRATION,
  missingTables,
  quoteIdent,
  schemaProblem,
  tableSequences,
  transactionAsDb,
} from './schema.js'

export type HqRestoreOptions = {
  file: string
  /** A new or empty directory. */
  dataDir: string
  /** An empty PostgreSQL database to restore into; undefined: the embedded database in the data dir. */
  databaseUrl?: string | undefined
  passphrase?: string | undefined
  clock: Clock
  progress?: (line: string) => void
  /** Rows per INSERT while loading. */
  batchRows?: number
}

export type HqRestoreResult = {
  file: string
  data_dir: string
  database: 'embedded' | 'postgresql'
  ca_fingerprint: string
  /** When the archive was written, and by which jil. */
  created_at: string
  jil_version: string
  migration_version: number
  tables: Record<string, number>
  /** Audit entries restored, their hash chain and every checkpoint signature verified. */
  audit_entries: number
  audit_checkpoints: number
  encrypted: boolean
  files: string[]
  restored_at: string
}

/** The data dir files kept in memory between the two passes: keys and certificates, a few KiB. */
const MAX_FILES_BYTES = 64 * 1024 * 1024

/**
 * Restores an archive written by backupHq into an empty data dir and an empty database.
 *
 * Two passes over the archive. The first verifies everything before anything is written: the
 * passphrase, every member's SHA-256 against the manifest, the schema version (an archive from a
 * newer jil is refused), that config.json and the CA belong together. The second loads the rows in
 * one transaction that also creates the schema (the migrations up to the archive's version, then
 * the newer ones of this jil), and that only commits once the audit ledger's hash chain and
 * checkpoint signatures verify from the restored rows. Files are written into a temporary sibling
 * of the data dir, renamed into place at the end.
 */
export async function restoreHq(o: HqRestoreOptions): Promise<HqRestoreResult> {
  const say = o.progress ?? (() => {})
  await assertEmptyTarget(o.dataDir)
  try {
    if (!(await stat(o.file)).isFile()) throw Object.assign(new Error('not a file'), {code: 'EISDIR'})
  } catch (err) {
    throw fileError(o.file, 'backup archive', err)
  }
  let db: Db | undefined
  let tmp: string | undefined
  try {
    say(`verifying ${o.file}`)
    const v = await verifyArchive(o.file, o.passphrase)
    const m = v.manifest
    say(`archive of ${m.created_at} (jil ${m.jil_version}, schema ${m.migration_version}): ${Object.keys(m.tables).length} tables, ${m.audit_entries} audit entries, ${v.files.size} files; all checksums match`)

    const parent = dirname(o.dataDir)
    const dir = join(parent, `.${basename(o.dataDir)}.restore-${randomBytes(4).toString('hex')}`)
    try {
      await mkdir(parent, {recursive: true})
      await mkdir(dir, {mode: 0o700})
    } catch (err) {
      throw new JilError('DATA_DIR_INVALID', `cannot create ${dir}: ${systemCode(err) ?? messageOf(err)}`, {hint: 'pass a --data-dir in a writable location'})
    }
    tmp = dir
    const tmpLock = await lockDataDir(tmp, 'jil hq restore')
    await writeFiles(tmp, v.files, v.config, o.databaseUrl)

    say(o.databaseUrl ? `loading into PostgreSQL at ${redactUrl(o.databaseUrl)}` : 'creating the embedded database')
    db = o.databaseUrl ? await openPg(o.databaseUrl, {max: 2, applicationName: 'jil-hq-restore'}) : await openPglite(join(tmp, HQ_FILES.db))
    const kind = db.kind
    const ledger = await db.transaction(async (tx) => {
      // With other restores and HQ's own migrations: the same lock migrate() takes, held to the end.
      await tx.query('SELECT pg_advisory_xact_lock($1::bigint)', [LOCKS.migrate.toString()])
      const ours = [...hqTables(LATEST_MIGRATION), 'schema_migrations']
      const absent = new Set(await missingTables(tx, ours))
      const taken = ours.filter((t) => !absent.has(t))
      if (taken.length > 0) {
        throw new JilError('DB_NOT_EMPTY', `the database already has HQ's tables (${taken.slice(0, 3).join(', ')}${taken.length > 3 ? ', …' : ''})`, {
          hint: 'restore into a new, empty database (createdb), or without --database-url into the embedded database',
        })
      }
      const txDb = transactionAsDb(tx, kind)
      await migrate(txDb, HQ_MIGRATIONS.filter((x) => x.version <= m.migration_version))
      await loadTables(tx, o, v, m, say)
      // An archive from an older jil: this jil's newer migrations run over the restored rows.
      const upgraded = await migrate(txDb, HQ_MIGRATIONS)
      if (upgraded.applied.length > 0) say(`applied migrations ${upgraded.applied.join(', ')} of this jil`)
      say(`verifying the audit ledger (${m.audit_entries} entries)`)
      const report = await verifyLedger(tx, v.files.get(HQ_FILES.checkpointPub)!.bytes.toString('utf8'), m.ca_fingerprint)
      if (!report.ok || report.entries !== m.audit_entries) {
        const p = report.problem
        throw new JilError('BACKUP_AUDIT_INVALID', `the archive's audit ledger does not verify: ${p?.message ?? `${report.entries} entries instead of ${m.audit_entries}`}`, {
          hint: 'nothing was restored; restore an earlier archive, and treat this one as tampered with',
          details: p ? {problem: p.code, ...(p.seq !== undefined ? {seq: p.seq} : {})} : {},
        })
      }
      return report
    })
    await db.close()
    db = undefined
    await tmpLock.release()
    try {
      if ((await readdir(o.dataDir).catch(() => undefined)) !== undefined) await rmdir(o.dataDir)
      await rename(tmp, o.dataDir)
    } catch (err) {
      // Only reached if someone filled the target meanwhile: the database is restored, so the files are kept where they are.
      const kept = tmp
      tmp = undefined
      throw new JilError('DATA_DIR_NOT_EMPTY', `cannot move the restored data dir into ${o.dataDir}: ${systemCode(err) ?? messageOf(err)}`, {
        hint: `the restored files are in ${kept}; move them to ${o.dataDir} by hand once it is empty`,
      })
    }
    tmp = undefined
    say(`restored HQ ${m.ca_fingerprint} into ${o.dataDir}`)
    return {
      file: o.file,
      data_dir: o.dataDir,
      database: o.databaseUrl ? 'postgresql' : 'embedded',
      ca_fingerprint: m.ca_fingerprint,
      created_at: m.created_at,
      jil_version: m.jil_version,
      migration_version: m.migration_version,
      tables: m.tables,
      audit_entries: ledger.entries,
      audit_checkpoints: ledger.checkpoints,
      encrypted: v.encrypted,
      files: [...v.files.keys()],
      restored_at: o.clock.now().toISOString(),
    }
  } catch (err) {
    await db?.close().catch(() => {})
    if (tmp) await rm(tmp, {recursive: true, force: true})
    throw err
  }
}

/** A new or empty directory; anything else is refused before the archive is even read. */
async function assertEmptyTarget(dir: string): Promise<void> {
  let st
  try {
    st = await stat(dir)
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return
    throw new JilError('DATA_DIR_INVALID', `cannot use ${dir}: ${systemCode(err) ?? messageOf(err)}`, {hint: 'pass a --data-dir you can write to'})
  }
  if (!st.isDirectory()) throw new JilError('DATA_DIR_INVALID', `${dir} exists and is not a directory`, {hint: 'pass a new or empty directory as --data-dir'})
  if ((await readdir(dir)).length > 0) {
    throw new JilError('DATA_DIR_NOT_EMPTY', `${dir} is not empty`, {hint: 'restore into a new or empty --data-dir; move the old one aside first if it is a broken HQ'})
  }
}

type Verified = {manifest: BackupManifest; encrypted: boolean; keys: KeyCache; files: Map<string, {bytes: Buffer; mode: number}>; config: HqConfig; tableOrder: string[]}

type Event = {type: 'prelude'; value: unknown} | {type: 'begin'; start: MemberStart} | {type: 'data'; bytes: Buffer} | {type: 'manifest'; value: BackupManifest}

/** A frame's or file's JSON object; anything else (not JSON, null, a list…) is a damaged archive. */
function parseJson<T>(payload: Buffer, what: string): T {
  let v: unknown
  try {
    v = JSON.parse(payload.toString('utf8'))
  } catch {
    throw corrupt(`its ${what} is not JSON`)
  }
  if (!isObject(v)) throw corrupt(`its ${what} is not a JSON object`)
  return v as T
}

/** The archive's frames in the order a writer makes them: prelude, members, manifest. */
async function* events(frames: AsyncGenerator<Frame>): AsyncGenerator<Event> {
  let state: 'start' | 'members' | 'member' | 'done' = 'start'
  for await (const f of frames) {
    if (state === 'done') throw corrupt('frames follow the manifest')
    if (f.type === FRAME.prelude) {
      if (state !== 'start') throw corrupt('a second prelude')
      state = 'members'
      yield {type: 'prelude', value: parseJson(f.payload, 'prelude')}
    } else if (state === 'start') {
      throw corrupt('it does not start with a prelude')
    } else if (f.type === FRAME.begin) {
      const s = parseJson<MemberStart>(f.payload, 'member header')
      const ok =
        (s.kind === 'table' && typeof s.table === 'string' && /^[a-z_][a-z0-9_]*$/.test(s.table) && s.name === tableMember(s.table)) ||
        (s.kind === 'file' && typeof s.file === 'string' && safeFileName(s.file) && s.name === fileMember(s.file) && Number.isInteger(s.mode))
      if (!ok) throw corrupt('a member header is malformed')
      state = 'member'
      yield {type: 'begin', start: s}
    } else if (f.type === FRAME.data) {
      if (state !== 'member') throw corrupt('data outside a member')
      yield {type: 'data', bytes: f.payload}
    } else if (f.type === FRAME.manifest) {
      state = 'done'
      yield {type: 'manifest', value: parseJson<BackupManifest>(f.payload, 'manifest')}
    }
  }
  if (state !== 'done') throw truncated()
}

function countLines(b: Buffer): number {
  let n = 0
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) n++
  return n
}

/** Pass one: reads the whole archive and checks it against its manifest and against this jil. */
async function verifyArchive(file: string, passphrase: string | undefined): Promise<Verified> {
  const keys: KeyCache = new Map()
  const {header, frames} = await openArchive(file, passphrase, keys)
  type Seen = {start: MemberStart; hash: ReturnType<typeof createHash>; bytes: number; rows: number; chunks: Buffer[]}
  const seen = new Map<string, Seen>()
  let current: Seen | undefined
  let manifest: BackupManifest | undefined
  let fileBytes = 0
  for await (const e of events(frames)) {
    if (e.type === 'begin') {
      if (seen.has(e.start.name)) throw corrupt(`member ${e.start.name} appears twice`)
      current = {start: e.start, hash: createHash('sha256'), bytes: 0, rows: 0, chunks: []}
      seen.set(e.start.name, current)
    } else if (e.type === 'data') {
      current!.hash.update(e.bytes)
      current!.bytes += e.bytes.length
      if (current!.start.kind === 'table') current!.rows += countLines(e.bytes)
      else {
        fileBytes += e.bytes.length
        if (fileBytes > MAX_FILES_BYTES) throw corrupt('its data dir files are implausibly large')
        current!.chunks.push(Buffer.from(e.bytes))
      }
    } else if (e.type === 'manifest') {
      manifest = e.value
    }
  }
  const m = manifest!
  if (m.format !== 1 || !Array.isArray(m.members) || !m.members.every(isObject) || !Array.isArray(m.migrations) || !m.migrations.every(isObject) || !isObject(m.tables) || typeof m.ca_fingerprint !== 'string') {
    throw corrupt('its manifest is malformed')
  }
  const problem = schemaProblem(m.migrations)
  if (problem?.code === 'NEWER') {
    throw new JilError('BACKUP_FROM_NEWER_JIL', `the archive was written by jil ${m.jil_version}, whose database schema (migration ${problem.version}) this jil does not know`, {
      hint: `restore it with jil ${m.jil_version} or newer`,
    })
  }
  if (problem) throw new JilError('BACKUP_SCHEMA_MISMATCH', `the archive's migration ${problem.version} differs from this jil's`, {hint: `restore it with jil ${m.jil_version}, the version that wrote it`})
  if (m.migration_version !== Math.max(0, ...m.migrations.map((x) => x.version)) || m.migration_version < 1) throw corrupt('its manifest names the wrong schema version')
  // Every member the manifest lists was read, with the same size and hash; nothing else was.
  const listed = new Map<string, ManifestMember>(m.members.map((x) => [x.name, x]))
  if (listed.size !== seen.size) throw corrupt('its members differ from its manifest')
  for (const [name, s] of seen) {
    const x = listed.get(name)
    if (!x || x.kind !== s.start.kind) throw corrupt(`member ${name} is not in its manifest`)
    if (x.bytes !== s.bytes || x.sha256 !== s.hash.digest('hex')) throw corrupt(`member ${name} does not match its SHA-256 in the manifest`)
    if (x.kind === 'table' && x.rows !== s.rows) throw corrupt(`member ${name} has ${s.rows} rows, the manifest says ${x.rows}`)
  }
  const tables = hqTables(m.migration_version)
  const tableMembers = [...seen.values()].filter((s) => s.start.kind === 'table').map((s) => (s.start as {table: string}).table)
  if (tableMembers.length !== tables.length || !tables.every((t) => tableMembers.includes(t) && m.tables[t] === (listed.get(tableMember(t)) as {rows: number}).rows)) {
    throw corrupt(`its tables are not HQ's tables at schema ${m.migration_version}`)
  }
  const files = new Map<string, {bytes: Buffer; mode: number}>()
  for (const s of seen.values()) if (s.start.kind === 'file') files.set(s.start.file, {bytes: Buffer.concat(s.chunks), mode: s.start.mode})
  const missing = REQUIRED_FILES.find((f) => !files.has(f))
  if (missing) throw corrupt(`it has no ${missing}`)
  const config = parseJson<HqConfig>(files.get(HQ_FILES.config)!.bytes, HQ_FILES.config)
  let caFingerprint: string
  try {
    caFingerprint = certFingerprint(files.get(HQ_FILES.caCert)!.bytes.toString('utf8'))
  } catch {
    throw corrupt(`its ${HQ_FILES.caCert} is not a certificate`)
  }
  if (config.version !== 1 || config.ca_fingerprint !== m.ca_fingerprint || caFingerprint !== m.ca_fingerprint) {
    throw corrupt(`its ${HQ_FILES.config}, ${HQ_FILES.caCert} and manifest name different CAs`)
  }
  if (m.audit_entries !== m.tables.audit_log) throw corrupt('its manifest counts the audit entries wrongly')
  return {manifest: m, encrypted: header.encryption !== null, keys, files, config, tableOrder: tableMembers}
}

/** The data dir files into the new dir, with their modes; config.json points at the database restored into. */
async function writeFiles(dir: string, files: Map<string, {bytes: Buffer; mode: number}>, archived: HqConfig, databaseUrl: string | undefined): Promise<void> {
  for (const [name, f] of files) {
    if (name === HQ_FILES.config) continue
    const path = join(dir, name)
    const mode = restoredMode(name, f.mode)
    await writeFile(path, f.bytes, {mode, flag: 'wx'})
    await chmod(path, mode) // the umask must not loosen or tighten what was backed up
  }
  const {database_url: _, ...config} = archived
  await writeHqConfig(dir, {...config, ...(databaseUrl ? {database_url: databaseUrl} : {})})
}

/**
 * Pass two, inside the restore's transaction: the archive is read again (its hashes checked again,
 * so a file swapped between the passes is caught before commit) and each table's rows inserted as
 * archived. Row triggers on INSERT are suspended for the load (nodes.config_version would be
 * recomputed); the append-only triggers fire only on UPDATE, DELETE and TRUNCATE and stay in force.
 */
async function loadTables(tx: Queryable, o: HqRestoreOptions, v: Verified, m: BackupManifest, say: (line: string) => void): Promise<void> {
  const tables = hqTables(m.migration_version)
  const parents = await foreignKeyParents(tx, tables)
  v.tableOrder.forEach((t, i) => {
    for (const p of parents.get(t) ?? []) {
      if (v.tableOrder.indexOf(p) > i) throw corrupt(`table ${t} comes before ${p}, which it refers to`)
    }
  })
  // Rows the migrations seed (the zones) give way to the archived ones.
  for (const t of [...v.tableOrder].reverse()) {
    const {rows} = await tx.query<{any: boolean}>(`SELECT EXISTS (SELECT 1 FROM ONLY ${quoteIdent(t)}) AS any`)
    if (rows[0]?.any) await tx.query(`DELETE FROM ONLY ${quoteIdent(t)}`)
  }
  const suspended: [string, string][] = []
  for (const t of tables) for (const trigger of await insertTriggers(tx, t)) suspended.push([t, trigger])
  for (const [t, trigger] of suspended) await tx.query(`ALTER TABLE ${quoteIdent(t)} DISABLE TRIGGER ${quoteIdent(trigger)}`)

  {
    const {frames} = await openArchive(o.file, o.passphrase, v.keys)
    const batchRows = o.batchRows ?? 1000
    let table: string | undefined
    let insert = ''
    let hash = createHash('sha256')
    let lines = new MemberLines()
    let batch: string[] = []
    let batchBytes = 0
    const flush = async () => {
      if (batch.length === 0) return
      await tx.query(insert, ['[' + batch.join(',') + ']'])
      batch = []
      batchBytes = 0
    }
    const endMember = async () => {
      if (!table) return
      if (lines.rest() !== '') throw corrupt(`table ${table} ends inside a row`)
      await flush()
      const x = m.members.find((y) => y.name === tableMember(table!))!
      if (hash.digest('hex') !== x.sha256) throw corrupt(`member ${x.name} changed since it was verified`)
      table = undefined
    }
    for await (const e of events(frames)) {
      if (e.type === 'begin') {
        await endMember()
        if (e.start.kind !== 'table') continue
        table = e.start.table
        const q = quoteIdent(table)
        const cols = (await insertableColumns(tx, table)).map(quoteIdent).join(', ')
        // OVERRIDING SYSTEM VALUE: identity columns (fleet_commands.seq, config_docs.seq…) keep their archived values.
        insert = `INSERT INTO ${q} (${cols}) OVERRIDING SYSTEM VALUE SELECT ${cols} FROM json_populate_recordset(NULL::${q}, $1::json)`
        hash = createHash('sha256')
        lines = new MemberLines()
        if (m.tables[table]) say(`loading ${table} (${m.tables[table]} rows)`)
      } else if (e.type === 'data' && table) {
        hash.update(e.bytes)
        for (const line of lines.push(e.bytes)) {
          batch.push(line)
          batchBytes += line.length
          if (batch.length >= batchRows || batchBytes >= 4 * 1024 * 1024) await flush()
        }
      } else if (e.type === 'manifest') {
        await endMember()
      }
    }
  }
  for (const [t, trigger] of suspended) await tx.query(`ALTER TABLE ${quoteIdent(t)} ENABLE TRIGGER ${quoteIdent(trigger)}`)

  for (const t of tables) {
    const {rows} = await tx.query<{n: number}>(`SELECT count(*) AS n FROM ONLY ${quoteIdent(t)}`)
    if (Number(rows[0]?.n) !== m.tables[t]) throw corrupt(`table ${t} has ${rows[0]?.n} rows after loading, the manifest says ${m.tables[t]}`)
    // Sequences continue past what the archived HQ handed out, not only past the rows it kept.
    for (const s of await tableSequences(tx, t)) {
      const max = await tx.query<{n: number | null}>(`SELECT max(${quoteIdent(s.column)})::int8 AS n FROM ONLY ${quoteIdent(t)}`)
      const value = Math.max(Number(m.sequences?.[`${t}.${s.column}`] ?? 0), Number(max.rows[0]?.n ?? 0))
      if (value > 0) await tx.query('SELECT setval($1::regclass, $2::int8, true)', [s.sequence, value])
    }
  }
}

/** The restored ledger, re-walked with the archive's own checkpoint key: chain, hashes, Merkle roots, signatures. */
async function verifyLedger(tx: Queryable, checkpointPem: string, caFingerprint: string): Promise<AuditVerifyReport> {
  let key
  try {
    key = checkpointKeyFromPem(checkpointPem)
  } catch {
    throw corrupt(`its ${HQ_FILES.checkpointPub} is not an Ed25519 public key`)
  }
  const verifier = new LedgerVerifier(key, auditOrigin(caFingerprint))
  const cps = await tx.query<Parameters<typeof toCheckpoint>[0]>('SELECT * FROM audit_checkpoints ORDER BY tree_size')
  for (const c of cps.rows) verifier.addCheckpoint(toCheckpoint(c))
  let after = 0
  while (!verifier.failed) {
    const {rows} = await tx.query<Parameters<typeof toEntry>[0]>(`SELECT ${LOG_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 5000`, [after])
    if (rows.length === 0) break
    for (const r of rows) verifier.addEntry(toEntry(r))
    after = rows.at(-1)!.seq
  }
  return verifier.finish()
}
