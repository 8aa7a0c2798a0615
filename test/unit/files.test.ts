import {chmod, mkdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {hqPath, lockDataDir, readHqConfig} from '../../src/hq/datadir.js'
import {loadUserBundle, readBundle} from '../../src/shared/bundle.js'
import {readSecret} from '../../src/shared/files.js'
import {tempDir} from '../helpers/hq.js'

let dir: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({dir, cleanup} = await tempDir())
})
afterEach(async () => cleanup())

describe('secrets on disk', () => {
  it('refuses a key file others can read, a missing one and a directory', async () => {
    const key = join(dir, 'k.key')
    await writeFile(key, 'x', {mode: 0o644})
    await expect(readSecret(key, 'CA key')).rejects.toMatchObject({code: 'KEY_PERMISSIONS', hint: `chmod 600 ${key}`})
    await chmod(key, 0o600)
    expect(await readSecret(key, 'CA key')).toBe('x')
    await expect(readSecret(join(dir, 'none'), 'CA key')).rejects.toMatchObject({code: 'FILE_MISSING'})
    await expect(readSecret(dir, 'CA key')).rejects.toMatchObject({code: 'FILE_INVALID'})
  })

  it('validates user bundles and explains a missing default profile', async () => {
    const p = join(dir, 'b.json')
    await writeFile(p, '{not json', {mode: 0o600})
    await expect(readBundle(p)).rejects.toMatchObject({code: 'BUNDLE_INVALID'})
    await writeFile(p, JSON.stringify({jil_bundle: 1, kind: 'user', name: 'x', role: 'root'}), {mode: 0o600})
    await expect(readBundle(p)).rejects.toMatchObject({code: 'BUNDLE_INVALID'})
    await expect(loadUserBundle(undefined, {XDG_CONFIG_HOME: dir})).rejects.toMatchObject({code: 'NO_PROFILE'})
    await expect(loadUserBundle(join(dir, 'nope.json'), {XDG_CONFIG_HOME: dir})).rejects.toMatchObject({code: 'FILE_MISSING'})
  })
})

describe('the HQ data dir', () => {
  it('has one opener at a time, and a stale lock (dead process) is taken over', async () => {
    const a = await lockDataDir(dir, 'first')
    await expect(lockDataDir(dir, 'second')).rejects.toMatchObject({code: 'DATA_DIR_LOCKED'})
    await a.release()
    const b = await lockDataDir(dir, 'second')
    await b.release()
    // A lock file whose process is gone: pid 2^22+ is above Linux's default pid_max.
    await writeFile(hqPath(dir, 'lock'), JSON.stringify({pid: 4_194_305, holder: 'crashed'}))
    const c = await lockDataDir(dir, 'third')
    expect(JSON.parse(await readFile(hqPath(dir, 'lock'), 'utf8'))).toMatchObject({pid: process.pid, holder: 'third'})
    await c.release()
  })

  it('says what is wrong with a directory that is not an HQ', async () => {
    await expect(readHqConfig(join(dir, 'missing'))).rejects.toMatchObject({code: 'DATA_DIR_MISSING'})
    await expect(readHqConfig(dir)).rejects.toMatchObject({code: 'DATA_DIR_NOT_HQ'})
    await writeFile(join(dir, 'file'), '')
    await expect(readHqConfig(join(dir, 'file'))).rejects.toMatchObject({code: 'DATA_DIR_INVALID'})
    await mkdir(join(dir, 'bad'))
    await writeFile(join(dir, 'bad', 'config.json'), '{"version": 7}')
    await expect(readHqConfig(join(dir, 'bad'))).rejects.toMatchObject({code: 'DATA_DIR_CORRUPT'})
  })
})

describe('writing files', () => {
  it('turns an unwritable path into FILE_UNWRITABLE and leaves no temp file', async () => {
    const {writeSecret} = await import('../../src/shared/files.js')
    const {readdir} = await import('node:fs/promises')
    await writeFile(join(dir, 'plain'), 'x')
    await expect(writeSecret(join(dir, 'plain', 'key.pem'), 'secret')).rejects.toMatchObject({code: 'FILE_UNWRITABLE', message: expect.stringContaining(join('plain', 'key.pem'))})
    expect(await readdir(dir)).toEqual(['plain'])
  })
})
