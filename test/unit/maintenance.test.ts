import {randomBytes} from 'node:crypto'
import {lutimes, mkdir, readdir, readFile, symlink, utimes, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {gunzipSync} from 'node:zlib'

import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {cleanTempDir, diskFinding, rotateLogs} from '../../src/node/agents/maintenance.js'
import {exists} from '../../src/shared/files.js'
import {tempDir} from '../helpers/hq.js'

let dir: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({dir, cleanup} = await tempDir('jil-maint-'))
})
afterEach(async () => cleanup())

const DAY = 86_400_000

describe('log rotation', () => {
  it('rotates files over the limit into NAME.1.gz, shifts older ones and keeps N', async () => {
    const logs = join(dir, 'log')
    await mkdir(logs)
    const generations: Buffer[] = []
    for (let i = 0; i < 4; i++) {
      const content = randomBytes(3000)
      generations.push(content)
      await writeFile(join(logs, 'health.log'), content)
      await writeFile(join(logs, 'small.log'), 'tiny\n')
      const r = await rotateLogs(logs, {maxBytes: 2048, keep: 2})
      expect(r).toEqual({rotated: ['health.log'], findings: []})
    }
    expect((await readdir(logs)).sort()).toEqual(['health.log.1.gz', 'health.log.2.gz', 'small.log'])
    expect(gunzipSync(await readFile(join(logs, 'health.log.1.gz')))).toEqual(generations[3])
    expect(gunzipSync(await readFile(join(logs, 'health.log.2.gz')))).toEqual(generations[2])
    // Under the limit: nothing moves.
    await writeFile(join(logs, 'health.log'), 'short\n')
    expect((await rotateLogs(logs, {maxBytes: 2048, keep: 2})).rotated).toEqual([])
  })

  it('finishes a rotation a crash interrupted, drops generations past a lowered keep, never rotates through a symlink', async () => {
    const logs = join(dir, 'log')
    await mkdir(logs)
    await writeFile(join(logs, 'a.log.rotating'), 'interrupted\n')
    for (const n of [1, 2, 3]) await writeFile(join(logs, `a.log.${n}.gz`), 'old')
    const outside = join(dir, 'outside.log')
    await writeFile(outside, randomBytes(5000))
    await symlink(outside, join(logs, 'link.log'))
    const r = await rotateLogs(logs, {maxBytes: 1024, keep: 2})
    expect(r.rotated).toEqual([])
    expect((await readdir(logs)).sort()).toEqual(['a.log.1.gz', 'a.log.2.gz', 'link.log'])
    expect(gunzipSync(await readFile(join(logs, 'a.log.1.gz'))).toString()).toBe('interrupted\n')
    expect((await readFile(outside)).length).toBe(5000)
    expect(await rotateLogs(join(dir, 'no-such-dir'), {maxBytes: 1024, keep: 2})).toEqual({rotated: [], findings: []})
  })
})

describe('temp dir cleanup', () => {
  const now = new Date('2026-03-01T00:00:00Z')
  const age = async (path: string, days: number, link = false) => {
    const t = new Date(now.getTime() - days * DAY)
    await (link ? lutimes(path, t, t) : utimes(path, t, t))
  }

  it('deletes files older than the limit by mtime, keeps newer ones and every directory', async () => {
    const tmp = join(dir, 'tmp')
    await mkdir(join(tmp, 'sub', 'deeper'), {recursive: true})
    for (const [p, days] of [['old.bin', 8], ['new.bin', 6], ['sub/old.txt', 30], ['sub/deeper/new.txt', 1]] as const) {
      await writeFile(join(tmp, p), 'x')
      await age(join(tmp, p), days)
    }
    await age(join(tmp, 'sub'), 30) // an old directory stays
    const r = await cleanTempDir(tmp, {maxAgeMs: 7 * DAY, now})
    expect(r).toEqual({deleted: 2})
    expect(await exists(join(tmp, 'old.bin'))).toBe(false)
    expect(await exists(join(tmp, 'sub', 'old.txt'))).toBe(false)
    expect(await exists(join(tmp, 'new.bin'))).toBe(true)
    expect(await exists(join(tmp, 'sub', 'deeper', 'new.txt'))).toBe(true)
    expect(await exists(join(tmp, 'sub'))).toBe(true)
  })

  it('never follows a symlink: an old link goes, its target (file or directory) stays', async () => {
    const tmp = join(dir, 'tmp')
    const outside = join(dir, 'outside')
    await mkdir(tmp)
    await mkdir(join(outside, 'd'), {recursive: true})
    await writeFile(join(outside, 'precious'), 'keep me')
    await writeFile(join(outside, 'd', 'also-precious'), 'keep me')
    await age(join(outside, 'precious'), 100)
    await age(join(outside, 'd', 'also-precious'), 100)
    await symlink(join(outside, 'precious'), join(tmp, 'old-link'))
    await age(join(tmp, 'old-link'), 9, true)
    await symlink(join(outside, 'd'), join(tmp, 'new-dir-link'))
    await age(join(tmp, 'new-dir-link'), 1, true)
    const r = await cleanTempDir(tmp, {maxAgeMs: 7 * DAY, now})
    expect(r.deleted).toBe(1)
    expect(await exists(join(tmp, 'old-link'))).toBe(false)
    expect(await readFile(join(outside, 'precious'), 'utf8')).toBe('keep me')
    expect(await readFile(join(outside, 'd', 'also-precious'), 'utf8')).toBe('keep me')
  })

  it('refuses / and relative dirs with a warning; a missing dir is nothing to do', async () => {
    for (const bad of ['/', 'tmp', '/tmp/../']) {
      const r = await cleanTempDir(bad, {maxAgeMs: 7 * DAY, now})
      expect(r.deleted).toBe(0)
      expect(r.finding).toMatchObject({id: `temp-dir-refused:${bad}`, severity: 'warning'})
    }
    // A temp dir that is a symlink to / is refused too.
    await symlink('/', join(dir, 'root-link'))
    expect((await cleanTempDir(join(dir, 'root-link'), {maxAgeMs: 7 * DAY, now})).finding?.title).toContain('resolves to the root directory')
    expect(await cleanTempDir(join(dir, 'none'), {maxAgeMs: 7 * DAY, now})).toEqual({deleted: 0})
  })
})

describe('disk use', () => {
  const usage = (percent: number) => ({used_bytes: percent * 1e9, total_bytes: 100e9, percent})
  it('warns at the configured percent and is critical from 90', () => {
    expect(diskFinding('/var/lib/jil', usage(84.9), 85)).toBeUndefined()
    expect(diskFinding('/var/lib/jil', usage(85), 85)).toMatchObject({id: 'disk-usage', severity: 'warning'})
    expect(diskFinding('/var/lib/jil', usage(90), 85)).toMatchObject({severity: 'critical'})
    // A threshold above 90 is the operator's choice: nothing below it.
    expect(diskFinding('/var/lib/jil', usage(92), 95)).toBeUndefined()
    expect(diskFinding('/var/lib/jil', usage(96), 95)).toMatchObject({severity: 'critical'})
  })
})
