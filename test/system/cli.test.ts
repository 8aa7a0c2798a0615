import {createHash, X509Certificate} from 'node:crypto'
import {chmod, mkdir, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {jil, jilServe} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

let dir: string
let cleanup: () => Promise<void>
let env: NodeJS.ProcessEnv
beforeAll(async () => {
  ;({dir, cleanup} = await tempDir('jil-sys-'))
  env = {XDG_CONFIG_HOME: join(dir, 'config'), JIL_HQ_URL: '', JIL_USER: '', JIL_DATABASE_URL: ''}
})
afterAll(async () => cleanup())

describe('the jil binary', () => {
  it('prints its version and help without a data dir or HQ', async () => {
    const v = await jil(['--version'], env)
    expect(v.code).toBe(0)
    expect(v.stdout).toMatch(/^jil\/\d+\.\d+\.\d+ /)
    const help = await jil(['--help'], env)
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('hq')
    const hq = await jil(['hq', '--help'], env)
    expect(hq.code).toBe(0)
    for (const c of ['hq init', 'hq serve', 'hq whoami']) expect(hq.stdout).toContain(c)
    const who = await jil(['hq', 'whoami', '--help'], env)
    expect(who.stdout).toContain('--json')
    expect(who.stdout).toContain('JIL_HQ_URL')
  })

  it('answers a usage error with exit 2 and one JSON error document', async () => {
    const r = await jil(['hq', 'init', '--json'], env)
    expect(r.code).toBe(2)
    expect(r.json()).toEqual({error: {code: 'USAGE', message: expect.stringContaining('data-dir'), hint: expect.any(String)}})
    const human = await jil(['hq', 'init'], env)
    expect(human.code).toBe(2)
    expect(human.stderr).toMatch(/^Error: .*data-dir.*\nHint: /)
    expect(human.stderr).not.toMatch(/\s+at /) // no stack trace without --debug
    expect((await jil(['hq', 'init', '--data-dir', ''], env)).code).toBe(2)
  })
})

describe('jil hq init, serve and whoami on the embedded database', () => {
  let hqDir: string
  let init: any

  it('creates an HQ and prints the CA fingerprint nodes pin', async () => {
    hqDir = join(dir, 'hq')
    const r = await jil(['hq', 'init', '--data-dir', hqDir, '--hostname', 'hq.example.test', '--json'], env)
    expect(r.code, r.stderr).toBe(0)
    init = r.json()
    const caPem = await readFile(join(hqDir, 'ca.crt'), 'utf8')
    const der = new X509Certificate(caPem).raw
    expect(init).toMatchObject({
      data_dir: hqDir,
      ca_fingerprint: 'sha256:' + createHash('sha256').update(der).digest('hex'),
      hq_url: 'https://hq.example.test:8443',
      database: 'embedded',
      profile: join(dir, 'config', 'jil', 'profile.json'),
    })
    const server = new X509Certificate(await readFile(join(hqDir, 'hq.crt'), 'utf8'))
    expect(server.subjectAltName).toBe('DNS:hq.example.test, DNS:localhost, IP Address:127.0.0.1')
    for (const f of ['ca.key', 'hq.key', 'signing.key', 'admin.bundle.json']) expect((await stat(join(hqDir, f))).mode & 0o777, f).toBe(0o600)
    expect((await stat(init.profile)).mode & 0o777).toBe(0o600)
    expect(JSON.parse(await readFile(init.profile, 'utf8'))).toMatchObject({name: 'admin', role: 'admin', ca_fingerprint: init.ca_fingerprint})
  })

  it('refuses to overwrite it, leaving it untouched', async () => {
    const before = await readFile(join(hqDir, 'ca.crt'))
    const r = await jil(['hq', 'init', '--data-dir', hqDir, '--json'], env)
    expect(r.code).toBe(1)
    expect(r.json().error).toMatchObject({code: 'HQ_EXISTS'})
    expect(await readFile(join(hqDir, 'ca.crt'))).toEqual(before)
  })

  it('refuses a data dir that is a file or a non-empty non-HQ directory', async () => {
    await writeFile(join(dir, 'a-file'), 'x')
    const file = await jil(['hq', 'init', '--data-dir', join(dir, 'a-file'), '--json', '--no-profile'], env)
    expect(file.code).toBe(1)
    expect(file.json().error.code).toBe('DATA_DIR_INVALID')
    await mkdir(join(dir, 'stuff'))
    await writeFile(join(dir, 'stuff', 'notes.txt'), 'mine')
    const full = await jil(['hq', 'init', '--data-dir', join(dir, 'stuff'), '--json', '--no-profile'], env)
    expect(full.json().error.code).toBe('DATA_DIR_NOT_EMPTY')
    expect(await readFile(join(dir, 'stuff', 'notes.txt'), 'utf8')).toBe('mine')
  })

  it('leaves nothing behind when the database refuses connections', async () => {
    const target = join(dir, 'refused')
    const r = await jil(['hq', 'init', '--data-dir', target, '--database-url', 'postgres://jil:pw@127.0.0.1:1/jil', '--json', '--no-profile'], env)
    expect(r.code).toBe(1)
    expect(r.json().error).toMatchObject({code: 'DB_UNREACHABLE', message: expect.stringContaining('ECONNREFUSED')})
    expect(r.stdout + r.stderr).not.toContain(':pw@')
    expect((await readdir(dir)).filter((f) => f.includes('refused'))).toEqual([])
  })

  it('serves HQ over mutual TLS: whoami as the admin, then stops cleanly on SIGTERM', async () => {
    const serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
    try {
      expect(serve.ready).toEqual({url: expect.stringMatching(/^https:\/\/127\.0\.0\.1:\d+$/), ca_fingerprint: init.ca_fingerprint})
      const who = await jil(['hq', 'whoami', '--hq', serve.ready.url, '--json'], env)
      expect(who.code, who.stderr).toBe(0)
      expect(who.json()).toMatchObject({kind: 'user', name: 'admin', role: 'admin', hq_url: serve.ready.url})
      const human = await jil(['hq', 'whoami'], {...env, JIL_HQ_URL: serve.ready.url})
      expect(human.stdout).toMatch(/^user\s+admin\nrole\s+admin\n/)

      const second = await jil(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
      expect(second.code).toBe(1)
      expect(second.json().error.code).toBe('DATA_DIR_LOCKED')
    } finally {
      serve.child.kill('SIGTERM')
    }
    expect(await serve.exited).toBe(0)
    expect(serve.stderr()).toContain('"msg":"stopped"')
    await expect(stat(join(hqDir, 'hq.lock'))).rejects.toThrow()
  })

  it('explains an unreachable HQ, a bad URL and a bad bundle', async () => {
    const down = await jil(['hq', 'whoami', '--hq', 'https://127.0.0.1:1', '--json'], env)
    expect(down.code).toBe(1)
    expect(down.json().error.code).toBe('HQ_UNREACHABLE')
    const http = await jil(['hq', 'whoami', '--hq', 'http://127.0.0.1:1', '--json'], env)
    expect(http.code).toBe(2)
    expect(http.json().error.code).toBe('HQ_URL_INVALID')
    await writeFile(join(dir, 'garbage.json'), 'garbage', {mode: 0o600})
    const bad = await jil(['hq', 'whoami', '--user', join(dir, 'garbage.json'), '--json'], env)
    expect(bad.json().error.code).toBe('BUNDLE_INVALID')
  })

  it('refuses to start with an unprotected or missing key', async () => {
    await chmod(join(hqDir, 'hq.key'), 0o644)
    const loose = await jil(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
    expect(loose.code).toBe(1)
    expect(loose.json().error).toMatchObject({code: 'KEY_PERMISSIONS', hint: `chmod 600 ${join(hqDir, 'hq.key')}`})
    await chmod(join(hqDir, 'hq.key'), 0o600)
    const key = await readFile(join(hqDir, 'ca.key'))
    await rm(join(hqDir, 'ca.key'))
    const missing = await jil(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
    expect(missing.json().error.code).toBe('FILE_MISSING')
    await writeFile(join(hqDir, 'ca.key'), key, {mode: 0o600})
    const garbage = await jil(['hq', 'serve', '--data-dir', join(dir, 'nowhere'), '--json'], env)
    expect(garbage.json().error.code).toBe('DATA_DIR_MISSING')
  })

  it('replaces the HQ with --force: a new CA', async () => {
    const r = await jil(['hq', 'init', '--data-dir', hqDir, '--force', '--json', '--no-profile'], env)
    expect(r.code, r.stderr).toBe(0)
    expect(r.json().ca_fingerprint).not.toBe(init.ca_fingerprint)
    expect((await readdir(dir)).filter((f) => f.startsWith('.hq'))).toEqual([])
  })
})

describe.runIf(hasPg)('jil hq on a real PostgreSQL server', () => {
  it('inits into an empty database, serves from it, and refuses a second HQ on it', async () => {
    const db = await freshPgDatabase()
    try {
      const hqDir = join(dir, 'hq-pg')
      const r = await jil(['hq', 'init', '--data-dir', hqDir, '--database-url', db.url, '--json', '--no-profile'], env)
      expect(r.code, r.stderr).toBe(0)
      expect(r.json().database).toBe('postgresql')
      await expect(stat(join(hqDir, 'db'))).rejects.toThrow()

      const again = await jil(['hq', 'init', '--data-dir', join(dir, 'hq-pg2'), '--database-url', db.url, '--json', '--no-profile'], env)
      expect(again.code).toBe(1)
      expect(again.json().error.code).toBe('DB_IN_USE')

      const serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', '127.0.0.1:0', '--json'], env)
      try {
        const who = await jil(['hq', 'whoami', '--hq', serve.ready.url, '--user', join(hqDir, 'admin.bundle.json'), '--json'], env)
        expect(who.json()).toMatchObject({name: 'admin', role: 'admin'})
      } finally {
        serve.child.kill('SIGTERM')
        await serve.exited
      }
    } finally {
      await db.drop()
    }
  })
})
