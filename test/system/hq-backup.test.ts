import {mkdir, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {jil, jilOk, jilServe, startHqProcess} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'

describe('jil hq backup and jil hq restore through the CLI', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let env: NodeJS.ProcessEnv
  let hqDir: string
  let fingerprint: string
  let serve: Awaited<ReturnType<typeof jilServe>> | undefined
  let restoredServe: Awaited<ReturnType<typeof jilServe>> | undefined

  beforeAll(async () => {
    tmp = await tempDir('jil-backup-sys-')
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: '', JIL_HQ_URL: '', JIL_HQ_DATA_DIR: '', JIL_BACKUP_PASSPHRASE_FILE: ''}
    ;({serve, fingerprint, hqDir} = await startHqProcess(tmp.dir, env))
    await jilOk(['hq', 'user', 'add', 'olga', '--role', 'ops-lead', '--out', join(tmp.dir, 'olga.json'), '--json'], env)
    await jilOk(['hq', 'operator', 'add', 'Helvetia Nodes AG', '--kyc', 'approved', '--json'], env)
    await writeFile(join(tmp.dir, 'pass'), 'a long passphrase for the backups\n', {mode: 0o600})
    await mkdir(join(tmp.dir, 'backups'))
  }, 120_000)
  afterAll(async () => {
    for (const s of [serve, restoredServe]) {
      s?.child.kill('SIGTERM')
      await s?.exited
    }
    await tmp?.cleanup()
  })

  it('backs up, refuses while HQ serves from the embedded database, restores, and the restored HQ serves the same users and ledger', async () => {
    const archive = join(tmp.dir, 'backups', 'hq.jilbak')
    const locked = await jil(['hq', 'backup', '--data-dir', hqDir, '--out', archive, '--passphrase-file', join(tmp.dir, 'pass'), '--json'], env)
    expect(locked.code).toBe(1)
    expect(locked.json().error).toMatchObject({code: 'DATA_DIR_LOCKED', hint: 'stop jil hq serve first, or back up a PostgreSQL-backed HQ online'})
    await expect(stat(archive)).rejects.toMatchObject({code: 'ENOENT'})

    serve!.child.kill('SIGTERM')
    await serve!.exited
    serve = undefined
    const b = await jilOk(['hq', 'backup', '--data-dir', hqDir, '--out', archive, '--passphrase-file', join(tmp.dir, 'pass'), '--json'], env)
    const backup = b.json()
    expect(backup).toMatchObject({file: archive, encrypted: true, database: 'embedded', tables: {users: 2, operators: 1}})
    expect(backup.bytes).toBe((await stat(archive)).size)
    expect(backup.audit_entries).toBeGreaterThanOrEqual(3)
    expect((await stat(archive)).mode & 0o777).toBe(0o600)
    expect(b.stderr).not.toMatch(/in the clear/)
    // Without a passphrase the archive holds the keys readable: said on stderr, stdout stays the result.
    const plain = await jilOk(['hq', 'backup', '--data-dir', hqDir, '--out', join(tmp.dir, 'backups', 'plain.jilbak'), '--json'], env)
    expect(plain.stderr).toMatch(/in the clear/)
    expect(plain.json()).toMatchObject({encrypted: false, audit_entries: backup.audit_entries})

    const restoredDir = join(tmp.dir, 'restored')
    const wrong = join(tmp.dir, 'wrong-pass')
    await writeFile(wrong, 'not it\n', {mode: 0o600})
    const refused = await jil(['hq', 'restore', archive, '--data-dir', restoredDir, '--passphrase-file', wrong, '--json'], env)
    expect(refused.code).toBe(1)
    expect(refused.json().error.code).toBe('BACKUP_PASSPHRASE_WRONG')
    await expect(stat(restoredDir)).rejects.toMatchObject({code: 'ENOENT'})

    const r = await jilOk(['hq', 'restore', archive, '--data-dir', restoredDir, '--passphrase-file', join(tmp.dir, 'pass'), '--json'], env)
    expect(r.json()).toMatchObject({data_dir: restoredDir, database: 'embedded', ca_fingerprint: fingerprint, tables: backup.tables, audit_entries: backup.audit_entries, encrypted: true})
    const again = await jil(['hq', 'restore', archive, '--data-dir', restoredDir, '--passphrase-file', join(tmp.dir, 'pass'), '--json'], env)
    expect(again.code).toBe(1)
    expect(again.json().error.code).toBe('DATA_DIR_NOT_EMPTY')

    restoredServe = await jilServe(['hq', 'serve', '--data-dir', restoredDir, '--listen', '127.0.0.1:0', '--json'], env)
    expect(restoredServe.ready.ca_fingerprint).toBe(fingerprint)
    const at = {...env, JIL_HQ_URL: restoredServe.ready.url}
    expect((await jilOk(['hq', 'whoami', '--user', join(tmp.dir, 'olga.json'), '--json'], at)).json()).toMatchObject({name: 'olga', role: 'ops-lead'})
    const verified = (await jilOk(['audit', 'verify', '--json'], at)).json()
    expect(verified).toMatchObject({ok: true})
    expect(verified.entries).toBeGreaterThanOrEqual(backup.audit_entries)
  }, 180_000)
})
