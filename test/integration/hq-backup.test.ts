import {createHash} from 'node:crypto'
import {mkdir, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {basename, dirname, join} from 'node:path'

import {pino} from 'pino'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {verifyFromHq} from '../../src/cli/audit.js'
import {backupHq, type HqBackupResult} from '../../src/hq/backup/backup.js'
import {ArchiveWriter, FRAME, openArchive} from '../../src/hq/backup/format.js'
import type {BackupManifest} from '../../src/hq/backup/manifest.js'
import {hqTables, LATEST_MIGRATION} from '../../src/hq/backup/schema.js'
import {restoreHq} from '../../src/hq/backup/restore.js'
import {hqPath, readHqConfig} from '../../src/hq/datadir.js'
import {startHq, type RunningHq} from '../../src/hq/server.js'
import {checkpointKeyFromPem} from '../../src/shared/audit-verify.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {ManualClock, systemClock} from '../../src/shared/clock.js'
import {openPg} from '../../src/shared/db/pg.js'
import {openPglite} from '../../src/shared/db/pglite.js'
import type {Db} from '../../src/shared/db/types.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import {connectTestNode, OPERATOR, testHeartbeat, type ConnectedNode} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'
import {until} from '../helpers/wait.js'

type Storage = {name: 'pglite' | 'pg'}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg' as const}] : [])]
if (!hasPg) it.skip('PostgreSQL half: JIL_TEST_DATABASE_URL is not set', () => {})

const FEES = {schedule: 'CH-2026', vat: 0.081, tiers: [{up_to: 10_000, bps: 12}]}
const PASSPHRASE = 'correct horse battery staple'

/** Every row of a table, as PostgreSQL renders it, sorted: two databases hold the same rows when these are equal. */
async function rowsOf(db: Db, table: string): Promise<string[]> {
  const {rows} = await db.query<{j: string}>(`SELECT row_to_json(t)::text AS j FROM "${table}" t`)
  return rows.map((r) => r.j).sort()
}

/** The tables a PostgreSQL database has (a failed restore must leave none). */
async function hqTablesIn(url: string): Promise<string[]> {
  const db = await openPg(url)
  try {
    return (await db.query<{name: string}>("SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'")).rows.map((r) => r.name)
  } finally {
    await db.close()
  }
}

async function startFrom(dataDir: string): Promise<RunningHq> {
  return startHq({dataDir, listen: {host: '127.0.0.1', port: 0}, clock: systemClock, logger: pino({level: 'silent'}), version: '0.0.0-test', alerts: {registryScanMs: 0}})
}

/** The restore target and every sibling the restore might have left behind. */
async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dirname(dir))).filter((n) => n.startsWith('.') && n.includes('restore'))
}

describe.each(storages)('hq backup and restore on $name', (storage) => {
  const encrypted = storage.name === 'pg'
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  const dbs: {url: string; drop: () => Promise<void>}[] = []
  const freshDb = async () => {
    const d = await freshPgDatabase()
    dbs.push(d)
    return d.url
  }
  let users: Record<string, {bundle: UserBundle; client: HqClient}>
  let node: ConnectedNode
  let archive: string
  let passFile: string
  let backup: HqBackupResult
  let restored: RunningHq | undefined

  beforeAll(async () => {
    tmp = await tempDir('jil-backup-')
    passFile = join(tmp.dir, 'backup.pass')
    await writeFile(passFile, `${PASSPHRASE}\n`, {mode: 0o600})
    t = await startTestHq(storage.name === 'pg' ? {databaseUrl: await freshDb()} : {})
    users = await testUsers(t, tmp.dir, [['olga', 'ops-lead']] as const)
    // An active node with its own certificate, a heartbeat (generated columns), a pending node's
    // join token, a zone config push (an identity column, the nodes trigger) and its refresh command.
    node = await connectTestNode(t.hq, t.admin, {nodeId: 'CH-BAK-01'})
    await node.client.heartbeat(testHeartbeat('CH-BAK-01', new Date(), {services: [{name: 'api', critical: true, state: 'running', health: 'healthy', digest: `sha256:${'a'.repeat(64)}`, version: 'v1'}], diskPercent: 42, certValidMs: 86_400_000}))
    await users.olga!.client.request('POST', '/v1/fleet/nodes', {node_id: 'SG-BAK-02', zone: 'SG/MAS', operator: OPERATOR, track: 'devnet'})
    await users.olga!.client.configPush({zone: 'CH/FINMA'}, {name: 'fees', content: FEES})
    await until('the heartbeat stored', async () => ((await t.hq.db.query("SELECT 1 FROM node_heartbeats WHERE node_id = 'CH-BAK-01'")).rowCount > 0 ? true : undefined), 20_000)
    await until('every audit entry sequenced', async () => ((await t.hq.db.query('SELECT 1 FROM audit_pending')).rowCount === 0 ? true : undefined), 20_000)
    await users.admin!.client.request('POST', '/v1/audit/checkpoint')
    archive = join(tmp.dir, 'out', 'hq.jilbak')
    await mkdir(dirname(archive))
  }, 120_000)

  afterAll(async () => {
    for (const u of Object.values(users ?? {})) await u.client.close()
    await node?.client.close()
    await node?.node.cleanup()
    await restored?.close()
    await t?.stop()
    for (const d of dbs) await d.drop()
    await tmp?.cleanup()
  })

  if (storage.name === 'pglite') {
    it('refuses to back up the embedded database while HQ holds the data dir', async () => {
      const err = await backupHq({dataDir: t.dataDir, out: archive, clock: systemClock, version: '0.0.0-test'}).catch((e: unknown) => e)
      expect(err).toMatchObject({code: 'DATA_DIR_LOCKED', hint: expect.stringContaining('stop jil hq serve first')})
      expect(await readdir(dirname(archive))).toEqual([])
      // From here on HQ is stopped, as the embedded database requires.
      await t.hq.close()
    }, 180_000)
  }

  it('writes one 0600 archive with every table of HQ\'s schema and the data dir\'s files', async () => {
    const clock = new ManualClock('2026-11-27T03:00:00Z')
    const lines: string[] = []
    backup = await backupHq({
      dataDir: t.dataDir,
      out: archive,
      passphrase: encrypted ? PASSPHRASE : undefined,
      clock,
      version: '0.0.0-test',
      progress: (l) => lines.push(l),
      batchPages: 1, // page through every table in the smallest steps
    })
    expect(backup).toMatchObject({file: archive, encrypted, created_at: '2026-11-27T03:00:00.000Z', migration_version: LATEST_MIGRATION, database: storage.name === 'pg' ? 'postgresql' : 'embedded'})
    expect((await stat(archive)).mode & 0o777).toBe(0o600)
    expect(backup.bytes).toBe((await stat(archive)).size)
    expect(Object.keys(backup.tables).sort()).toEqual(hqTables(LATEST_MIGRATION))
    expect(backup.tables).toMatchObject({users: 2, operators: 1, nodes: 2, join_tokens: 2, zones: 13, config_docs: 1, node_heartbeats: 1})
    expect(backup.audit_entries).toBeGreaterThanOrEqual(6)
    expect(backup.files).toEqual(expect.arrayContaining(['config.json', 'ca.crt', 'ca.key', 'hq.key', 'signing.key', 'checkpoint.key', 'checkpoint.pub', 'admin.bundle.json', 'registry-token.key']))
    expect(backup.files).not.toContain('hq.lock')
    expect(backup.files).not.toContain('db')
    // The keys travel inside the archive: without a passphrase they are there to read, with one they are not.
    const bytes = await readFile(archive)
    expect(bytes.subarray(0, 8).toString()).toBe('jilbak1\n')
    expect(lines.some((l) => l.startsWith('dumped'))).toBe(true)
    // An existing archive is never replaced by accident.
    await expect(backupHq({dataDir: t.dataDir, out: archive, clock, version: '0.0.0-test'})).rejects.toMatchObject({code: 'FILE_EXISTS'})
    // Nor is a directory, even with --force: refused before anything is dumped.
    await expect(backupHq({dataDir: t.dataDir, out: dirname(archive), force: true, clock, version: '0.0.0-test'})).rejects.toMatchObject({code: 'FILE_INVALID'})
    expect(await readdir(dirname(archive))).toEqual([basename(archive)])
  }, 180_000)

  it('refuses a non-empty target dir, a database that holds HQ\'s tables, a wrong passphrase, a flipped byte and a cut-off archive, leaving the target untouched', async () => {
    const pass = encrypted ? PASSPHRASE : undefined
    const busy = join(tmp.dir, 'busy')
    await mkdir(busy)
    await writeFile(join(busy, 'notes.txt'), 'mine')
    await expect(restoreHq({file: archive, dataDir: busy, passphrase: pass, clock: systemClock})).rejects.toMatchObject({code: 'DATA_DIR_NOT_EMPTY'})
    expect(await readdir(busy)).toEqual(['notes.txt'])

    const target = join(tmp.dir, 'never')
    if (storage.name === 'pg') {
      // The source HQ's own database already has every table.
      const config = await readHqConfig(t.dataDir)
      await expect(restoreHq({file: archive, dataDir: target, databaseUrl: config.database_url!, passphrase: pass, clock: systemClock})).rejects.toMatchObject({code: 'DB_NOT_EMPTY'})
      await expect(stat(target)).rejects.toMatchObject({code: 'ENOENT'})
      await expect(restoreHq({file: archive, dataDir: target, databaseUrl: await freshDb(), passphrase: 'not the passphrase', clock: systemClock})).rejects.toMatchObject({code: 'BACKUP_PASSPHRASE_WRONG'})
      await expect(restoreHq({file: archive, dataDir: target, clock: systemClock})).rejects.toMatchObject({code: 'BACKUP_PASSPHRASE_REQUIRED'})
    }

    const original = await readFile(archive)
    for (const [name, bytes, code] of [
      ['flipped', (() => {
        const b = Buffer.from(original)
        b[Math.floor(b.length / 2)]! ^= 0x01
        return b
      })(), 'BACKUP_CORRUPT'],
      // Cut inside gzip's stream: its length check; cut inside a sealed chunk: that chunk's authentication.
      ['cut', original.subarray(0, original.length - 100), encrypted ? 'BACKUP_CORRUPT' : 'BACKUP_TRUNCATED'],
      // Cut where a chunk (here: the whole body) ends: the last-chunk flag, or gzip, says it was not the end.
      ['body gone', original.subarray(0, 8 + 4 + original.readUInt32BE(8) + 32 + (encrypted ? 32 : 0)), 'BACKUP_TRUNCATED'],
      ['header', (() => {
        const b = Buffer.from(original)
        b[20]! ^= 0x01
        return b
      })(), 'BACKUP_CORRUPT'],
    ] as const) {
      const file = join(tmp.dir, `${name}.jilbak`)
      await writeFile(file, bytes)
      const err = await restoreHq({file, dataDir: target, ...(storage.name === 'pg' ? {databaseUrl: await freshDb()} : {}), passphrase: pass, clock: systemClock}).catch((e: unknown) => e)
      expect(err, name).toMatchObject({code})
      expect((err as Error).message).not.toContain('\n')
      await expect(stat(target)).rejects.toMatchObject({code: 'ENOENT'})
    }
    if (storage.name === 'pg') {
      // Nothing of the failed restores reached the databases either: each has no HQ table.
      for (const d of dbs.slice(1)) expect(await hqTablesIn(d.url)).toEqual([])
    }
    // Checksums made to match: an archive from a newer schema is refused before anything is written,
    // an altered audit entry once loaded, by the ledger's own hash chain (the transaction rolls back).
    const pass2 = encrypted ? PASSPHRASE : undefined
    const newer = join(tmp.dir, 'newer.jilbak')
    await forge(archive, newer, pass2, {manifest: (m) => void (m.migrations.push({version: 999, name: 'future', checksum: 'x'}), (m.migration_version = 999))})
    await expect(restoreHq({file: newer, dataDir: target, passphrase: pass2, clock: systemClock})).rejects.toMatchObject({code: 'BACKUP_FROM_NEWER_JIL'})
    const altered = join(tmp.dir, 'altered.jilbak')
    await forge(archive, altered, pass2, {member: ['db/audit_log.ndjson', (b) => Buffer.from(b.toString().replace('"action":"user.add"', '"action":"user.revoke"'))]})
    const err = await restoreHq({file: altered, dataDir: target, ...(storage.name === 'pg' ? {databaseUrl: await freshDb()} : {}), passphrase: pass2, clock: systemClock}).catch((e: unknown) => e)
    expect(err).toMatchObject({code: 'BACKUP_AUDIT_INVALID', details: {problem: 'ENTRY_HASH_MISMATCH'}})
    await expect(stat(target)).rejects.toMatchObject({code: 'ENOENT'})
    if (storage.name === 'pg') expect(await hqTablesIn(dbs.at(-1)!.url)).toEqual([])
    expect(await leftovers(target)).toEqual([])
  }, 180_000)

  it('restores into a fresh dir and database: the same rows, keys and CA; old bundles and the node authenticate; the ledger verifies and grows', async () => {
    const target = join(tmp.dir, 'restored', 'hq')
    const databaseUrl = storage.name === 'pg' ? await freshDb() : undefined
    const lines: string[] = []
    const r = await restoreHq({file: archive, dataDir: target, databaseUrl, passphrase: encrypted ? PASSPHRASE : undefined, clock: systemClock, progress: (l) => lines.push(l), batchRows: 3})
    expect(r).toMatchObject({data_dir: target, database: storage.name === 'pg' ? 'postgresql' : 'embedded', ca_fingerprint: t.init.ca_fingerprint, tables: backup.tables, audit_entries: backup.audit_entries, encrypted, migration_version: LATEST_MIGRATION})
    expect(r.audit_checkpoints).toBeGreaterThanOrEqual(1)
    expect(lines.some((l) => l.startsWith('verifying the audit ledger'))).toBe(true)
    expect(await leftovers(target)).toEqual([])

    // Files: byte for byte, keys 0600; config.json points at the database restored into.
    for (const f of backup.files.filter((x) => x !== 'config.json')) {
      expect(await readFile(join(target, f)), f).toEqual(await readFile(join(t.dataDir, f)))
      if (f.endsWith('.key') || f.endsWith('.json')) expect((await stat(join(target, f))).mode & 0o777, f).toBe(0o600)
    }
    const config = await readHqConfig(target)
    expect(config.ca_fingerprint).toBe(t.init.ca_fingerprint)
    expect(config.database_url).toBe(databaseUrl)

    // Rows: every table as in the source. The embedded source is stopped, so all of it compares; the
    // PostgreSQL source kept serving, so only what its background loops do not touch does.
    const source = storage.name === 'pg' ? t.hq.db : await openPglite(hqPath(t.dataDir, 'db'))
    const copy = databaseUrl ? await openPg(databaseUrl) : await openPglite(hqPath(target, 'db'))
    try {
      const tables = storage.name === 'pg' ? ['users', 'operators', 'nodes', 'join_tokens', 'certificates', 'zones', 'config_docs', 'fleet_commands', 'node_heartbeats', 'hq_meta', 'signing_keys'] : hqTables(LATEST_MIGRATION)
      for (const table of tables) expect(await rowsOf(copy, table), table).toEqual(await rowsOf(source, table))
      // The tables read from the migrations' DDL are exactly the tables the migrations make.
      const catalog = await copy.query<{name: string}>("SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'")
      expect(catalog.rows.map((x) => x.name).sort()).toEqual(hqTables(LATEST_MIGRATION))
      const head = (db: Db) => db.query<{j: string}>('SELECT row_to_json(a)::text AS j FROM audit_log a WHERE seq <= $1 ORDER BY seq', [backup.audit_entries]).then((x) => x.rows)
      expect(await head(copy)).toEqual(await head(source))
      // Generated columns were computed again from the restored body.
      expect((await copy.query('SELECT disk_percent FROM node_heartbeats')).rows).toEqual([{disk_percent: 42}])
    } finally {
      await copy.close()
      if (source !== t.hq.db) await source.close()
    }

    restored = await startFrom(target)
    expect(restored.caFingerprint).toBe(t.init.ca_fingerprint)
    // Bundles issued before the backup (same CA, same certificate records) and the node's own identity.
    const admin = await HqClient.connect(restored.url, t.admin)
    const olga = await HqClient.connect(restored.url, users.olga!.bundle)
    try {
      expect(await olga.whoami()).toMatchObject({name: 'olga', role: 'ops-lead'})
      const nodes = await admin.request<{nodes: {id: string; status: string}[]}>('GET', '/v1/fleet/nodes')
      expect(nodes.nodes.map((n) => [n.id, n.status]).sort()).toEqual([['CH-BAK-01', 'active'], ['SG-BAK-02', 'pending']])
      const nodeClient = await HqClient.connect(restored.url, await nodeIdentityOf(node))
      try {
        await nodeClient.heartbeat(testHeartbeat('CH-BAK-01', new Date(), {services: [], certValidMs: 86_400_000}))
      } finally {
        await nodeClient.close()
      }

      // New actions after the restore: a user (audit_pending's ids continue past the archived ones, which
      // live on in audit_log.pending_id) and a config version (config_docs.seq, an identity column).
      const before = (await restored.db.query<{n: number}>('SELECT count(*)::int AS n FROM audit_log')).rows[0]!.n
      await admin.request('POST', '/v1/operators', {name: 'Restored Ops', kyc: 'approved'})
      const push = await olga.configPush({zone: 'CH/FINMA'}, {name: 'fees', content: {...FEES, vat: 0.077}})
      expect(push).toMatchObject({version: 2, changed: true})
      await until('the new entries sequenced', async () => ((await restored!.db.query('SELECT 1 FROM audit_pending')).rowCount === 0 ? true : undefined), 20_000)
      expect((await restored.db.query<{n: number}>('SELECT count(*)::int AS n FROM audit_log')).rows[0]!.n).toBeGreaterThanOrEqual(before + 2)
      await admin.request('POST', '/v1/audit/checkpoint')
      const report = await verifyFromHq(admin, checkpointKeyFromPem(t.admin.checkpoint_key!))
      expect(report).toMatchObject({ok: true, problem: null})
      expect(report.entries).toBeGreaterThanOrEqual(backup.audit_entries + 2)
    } finally {
      await admin.close()
      await olga.close()
    }
  }, 180_000)
})

/**
 * Rewrites an archive as a careful forger would: a member's content changed and the manifest's
 * size and SHA-256 of it updated to match, so only what the restore checks beyond checksums stops it.
 */
async function forge(src: string, dst: string, passphrase: string | undefined, edit: {member?: [string, (b: Buffer) => Buffer]; manifest?: (m: BackupManifest) => void}): Promise<void> {
  const {frames} = await openArchive(src, passphrase)
  const out: {type: number; payload: Buffer}[] = []
  for await (const f of frames) out.push({type: f.type, payload: Buffer.from(f.payload)})
  const w = await ArchiveWriter.create(dst, passphrase)
  let current = ''
  const changed = new Map<string, Buffer>()
  for (let i = 0; i < out.length; i++) {
    const f = out[i]!
    if (f.type === FRAME.begin) {
      current = JSON.parse(f.payload.toString()).name
      await w.frame(FRAME.begin, f.payload)
      if (edit.member?.[0] === current) {
        const parts: Buffer[] = []
        while (out[i + 1]?.type === FRAME.data) parts.push(out[++i]!.payload)
        const b = edit.member[1](Buffer.concat(parts))
        changed.set(current, b)
        await w.data(b)
      }
    } else if (f.type === FRAME.manifest) {
      const m = JSON.parse(f.payload.toString()) as BackupManifest
      for (const x of m.members) {
        const b = changed.get(x.name)
        if (b) Object.assign(x, {bytes: b.length, sha256: createHash('sha256').update(b).digest('hex')})
      }
      edit.manifest?.(m)
      await w.json(FRAME.manifest, m)
    } else {
      await w.frame(f.type as (typeof FRAME)[keyof typeof FRAME], f.payload)
    }
  }
  await w.finish()
}

/** The node's mutual-TLS identity from its state dir, as its daemon loads it. */
async function nodeIdentityOf(n: ConnectedNode): Promise<{cert: string; key: string; ca: string}> {
  const id = await loadNodeIdentity(n.node.stateDir)
  return {cert: id.certPem, key: id.keyPem, ca: id.caPem}
}
