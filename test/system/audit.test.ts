import {join} from 'node:path'

import pg from 'pg'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {jil, jilServe} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

describe.runIf(hasPg)('jil audit against HQ on PostgreSQL', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let db: Awaited<ReturnType<typeof freshPgDatabase>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let env: NodeJS.ProcessEnv
  let sql: pg.Client
  let hqDir: string

  beforeAll(async () => {
    tmp = await tempDir('jil-audit-sys-')
    db = await freshPgDatabase()
    hqDir = join(tmp.dir, 'hq')
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: ''}
    const init = await jil(['hq', 'init', '--data-dir', hqDir, '--database-url', db.url, '--json'], env)
    expect(init.code, init.stderr).toBe(0)
    serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
    env.JIL_HQ_URL = serve.ready.url
    sql = new pg.Client({connectionString: db.url})
    await sql.connect()
    // Twenty actions, as HQ's actions record them: a pending row in their own transaction.
    for (let i = 1; i <= 20; i++) {
      const actor = i % 4 === 0 ? {type: 'user', id: 'sam', role: 'security-lead'} : {type: 'user', id: 'ci-pipeline', role: 'ci-pipeline'}
      const action = i % 4 === 0 ? 'cert.revoke' : 'image.push'
      const details = i % 4 === 0 ? {serial: `0${i}`, reason: 'decommissioned', kind: 'node'} : {image: 'jil/wallet-api', digest: `sha256:${String(i).padStart(64, '0')}`, version: `v95.${i}`, track: 'devnet', commit: 'abc', key_id: 'k'}
      await sql.query('INSERT INTO audit_pending (time, actor, action, subject, details) VALUES (now(), $1, $2, $3, $4)', [actor, action, `s-${i}`, details])
    }
    for (let i = 0; i < 100; i++) {
      const {rows} = await sql.query('SELECT count(*)::int AS n FROM audit_pending')
      if (rows[0].n === 0) break
      await new Promise((r) => setTimeout(r, 100))
    }
  })
  afterAll(async () => {
    serve?.child.kill('SIGTERM')
    await serve?.exited
    await sql?.end()
    await db?.drop()
    await tmp?.cleanup()
  })

  it('lists entries newest first, filtered', async () => {
    const r = await jil(['audit', 'log', '--action', 'cert.revoke', '--json'], env)
    expect(r.code, r.stderr).toBe(0)
    expect(r.json().entries.map((e: {subject: string}) => e.subject)).toEqual(['s-20', 's-16', 's-12', 's-8', 's-4'])
    const human = await jil(['audit', 'log', '--limit', '3'], env)
    expect(human.stdout.split('\n')[0]).toMatch(/^SEQ\s+TIME\s+ACTOR\s+ACTION\s+SUBJECT\s+DETAILS$/)
    expect(human.stdout).toContain('ci-pipeline (ci-pipeline)')
    const bad = await jil(['audit', 'log', '--action', 'image.explode', '--json'], env)
    expect(bad.code).toBe(2)
    expect(bad.json().error.code).toBe('ACTION_UNKNOWN')
    const since = await jil(['audit', 'log', '--since', 'last tuesday', '--json'], env)
    expect(since.code).toBe(2)
  })

  it('verifies the ledger, proves an entry, and verifies an export offline', async () => {
    const v = await jil(['audit', 'verify', '--json'], env)
    expect(v.code, v.stderr).toBe(0)
    expect(v.json()).toMatchObject({ok: true, entries: 21, tree_size: 21})
    const single = await jil(['audit', 'verify', '--workers', '0', '--json'], env)
    expect(single.json()).toEqual(v.json())
    const p = await jil(['audit', 'proof', '7', '--json'], env)
    expect(p.code, p.stderr).toBe(0)
    expect(p.json()).toMatchObject({seq: 7, verified: true, entry: {seq: 7, subject: 's-6'}})
    const file = join(tmp.dir, 'export.ndjson')
    const e = await jil(['audit', 'export', file, '--json'], env)
    expect(e.json()).toMatchObject({file, entries: 21})
    expect((await jil(['audit', 'export', file, '--json'], env)).json().error.code).toBe('FILE_EXISTS')
    // The regulator: no bundle, no HQ, only the checkpoint public key.
    const offline = await jil(['audit', 'verify', '--file', file, '--checkpoint-key', join(hqDir, 'checkpoint.pub'), '--json'], {XDG_CONFIG_HOME: join(tmp.dir, 'nobody'), JIL_HQ_URL: 'https://127.0.0.1:1'})
    expect(offline.code, offline.stderr).toBe(0)
    expect(offline.json()).toMatchObject({ok: true, entries: 21, source: file})
  })

  it('names the first bad seq after a superuser edits or deletes rows behind the triggers, and exits 1', async () => {
    await sql.query("SET session_replication_role = replica") // superuser: triggers off for this session
    await sql.query(`UPDATE audit_log SET details = details || '{"reason": "nothing to see"}' WHERE seq = 9`)
    const edited = await jil(['audit', 'verify', '--json'], env)
    expect(edited.code).toBe(1)
    expect(edited.json().error).toMatchObject({code: 'AUDIT_TAMPERED', problem: 'ENTRY_HASH_MISMATCH', seq: 9})
    expect((await jil(['audit', 'verify', '--workers', '0', '--json'], env)).json().error).toEqual(edited.json().error)
    await sql.query('DELETE FROM audit_log WHERE seq = 4')
    const deleted = await jil(['audit', 'verify'], env)
    expect(deleted.code).toBe(1)
    expect(deleted.stderr).toMatch(/^Error: entry 4 is missing/)
    await sql.query('RESET session_replication_role')
  })
})
