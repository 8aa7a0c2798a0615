import {execFile} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {lutimes, mkdir, readdir, readFile, symlink, truncate, utimes, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {createGunzip, gzipSync} from 'node:zlib'

import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {runAgent} from '../../src/node/agents/run.js'
import {containerName, DockerRuntime} from '../../src/node/runtime.js'
import {ManualClock} from '../../src/shared/clock.js'
import {exists} from '../../src/shared/files.js'
import {startTestHq, tempDir} from '../helpers/hq.js'
import {docker, removeContainersOf, testBaseImage} from '../helpers/images.js'
import {joinTestNode, agentContexts, type TestNode} from '../helpers/node.js'

const IMAGE = process.env.JIL_TEST_IMAGE
if (!IMAGE && process.env.CI) throw new Error('JIL_TEST_IMAGE is not set: run `eval "$(scripts/test-services.sh env)"` first')

const NODE = 'AU-MAINTAG-01'
const OTHER = 'AU-MAINTAG-02'
const DAY = 86_400_000
const MB = 1024 * 1024

/** Streams a gzip file and counts what it inflates to (a 101 MB log never sits in the test's memory either). */
async function gunzippedSize(path: string): Promise<{size: number; head: string}> {
  let size = 0
  let head = ''
  await pipeline(
    createReadStream(path),
    createGunzip(),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (size === 0) head = chunk.subarray(0, 16).toString()
        size += chunk.length
        cb()
      },
    }),
  )
  return {size, head}
}

describe.runIf(IMAGE)('maintenance agent on the real engine', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let node: TestNode
  let work: Awaited<ReturnType<typeof tempDir>>
  let runtime: DockerRuntime
  const base = IMAGE ? testBaseImage() : {registry: '', repository: '', digest: ''}
  const {context, closeAll} = agentContexts(() => node)
  const images: string[] = []
  const volumes: string[] = []

  beforeAll(async () => {
    t = await startTestHq({registry: base.registry})
    node = await joinTestNode(t.hq, t.admin, {nodeId: NODE, zone: 'AU/ASIC'})
    work = await tempDir('jil-maint-it-')
    runtime = await DockerRuntime.connect(process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST)
    await removeContainersOf(NODE)
    if (!(await runtime.hasImage(`${base.repository}@${base.digest}`))) await runtime.pull(base.repository, base.digest)
    // Image pruning is engine-wide and the base image is only referenced by digest (dangling to
    // Docker): a container of it keeps it for the other tests using this engine.
    await runtime.create(NODE, {name: 'anchor', image: 'jil/busybox', repository: base.repository, digest: base.digest, version: 'v1.0', critical: false, network: 'none', command: ['sleep', '3600']}, containerName(NODE, 'anchor'))
  })
  afterEach(async () => {
    await closeAll()
  })
  afterAll(async () => {
    await removeContainersOf(NODE)
    for (const i of images) await docker('rmi', '-f', i).catch(() => '')
    for (const v of volumes) await docker('volume', 'rm', '-f', v).catch(() => '')
    await t?.stop()
    await node?.cleanup()
    await work?.cleanup()
  })

  it('rotates a 101 MB log into NAME.1.gz (gunzips to the original size), shifting older ones and keeping N', async () => {
    const logDir = join(work.dir, 'log')
    await mkdir(logDir)
    const log = join(logDir, 'daemon.log')
    await writeFile(log, 'first line\n')
    await truncate(log, 101 * MB) // sparse: the rest reads as zeros
    await writeFile(join(logDir, 'daemon.log.1.gz'), gzipSync('generation 1\n'))
    await writeFile(join(logDir, 'daemon.log.2.gz'), gzipSync('generation 2\n'))
    await writeFile(join(logDir, 'cron.log'), 'small\n')
    const report = await runAgent('maintenance', await context({env: {JIL_LOG_DIR: logDir, JIL_LOG_KEEP: '2'}}))
    expect(report).toMatchObject({ok: true, details: {rotated: ['daemon.log']}})
    expect((await readdir(logDir)).sort()).toEqual(['cron.log', 'daemon.log.1.gz', 'daemon.log.2.gz'])
    expect(await gunzippedSize(join(logDir, 'daemon.log.1.gz'))).toEqual({size: 101 * MB, head: 'first line\n\0\0\0\0\0'})
    expect(await gunzippedSize(join(logDir, 'daemon.log.2.gz'))).toMatchObject({head: 'generation 1\n'})
    expect(await readFile(join(logDir, 'cron.log'), 'utf8')).toBe('small\n')
  })

  it('deletes an 8-day-old temp file, keeps a 6-day-old one, and never follows a symlink out of the temp dir', async () => {
    const tmp = join(work.dir, 'tmp')
    const outside = join(work.dir, 'outside')
    await mkdir(join(tmp, 'job'), {recursive: true})
    await mkdir(outside)
    const clock = new ManualClock(new Date())
    const age = (days: number) => new Date(clock.now().getTime() - days * DAY)
    await writeFile(join(tmp, 'old.dat'), 'x')
    await utimes(join(tmp, 'old.dat'), age(8), age(8))
    await writeFile(join(tmp, 'job', 'recent.dat'), 'x')
    await utimes(join(tmp, 'job', 'recent.dat'), age(6), age(6))
    await writeFile(join(outside, 'precious.db'), 'keep me')
    await utimes(join(outside, 'precious.db'), age(30), age(30))
    await symlink(join(outside, 'precious.db'), join(tmp, 'link-out'))
    await lutimes(join(tmp, 'link-out'), age(9), age(9))
    await symlink(outside, join(tmp, 'dir-out'))

    const report = await runAgent('maintenance', await context({clock, env: {JIL_TEMP_DIRS: `${tmp}:relative/tmp`, JIL_LOG_DIR: join(work.dir, 'no-logs')}}))
    expect(report).toMatchObject({ok: true, details: {temp_deleted: 2}})
    expect(await exists(join(tmp, 'old.dat'))).toBe(false)
    expect(await exists(join(tmp, 'job', 'recent.dat'))).toBe(true)
    expect(await exists(join(tmp, 'job'))).toBe(true)
    // The old link itself went; what it pointed to, and the directory behind the other link, did not.
    expect(await readFile(join(outside, 'precious.db'), 'utf8')).toBe('keep me')
    expect(await exists(join(outside))).toBe(true)
    expect(report.findings).toContainEqual(expect.objectContaining({id: 'temp-dir-refused:relative/tmp', severity: 'warning'}))

    // A week later the 6-day-old file is old too.
    clock.advance(2 * DAY)
    const later = await runAgent('maintenance', await context({clock, env: {JIL_TEMP_DIRS: tmp, JIL_LOG_DIR: join(work.dir, 'no-logs')}}))
    expect(later.details).toMatchObject({temp_deleted: 1})
    expect(await exists(join(tmp, 'job', 'recent.dat'))).toBe(false)
  })

  it('prunes a dangling image but never one labelled jil.keep=true', async () => {
    const src = join(work.dir, 'rootfs')
    await mkdir(src, {recursive: true})
    await writeFile(join(src, 'marker'), randomBytes(16).toString('hex'))
    const tar = join(work.dir, 'rootfs.tar')
    await new Promise<void>((resolve, reject) => execFile('tar', ['-C', src, '-cf', tar, 'marker'], (err) => (err ? reject(err) : resolve())))
    // Untagged imports: dangling images.
    const dangling = await docker('import', '--change', `LABEL jil.test=${NODE}`, tar)
    const kept = await docker('import', '--change', 'LABEL jil.keep=true', '--change', `LABEL jil.test=${NODE}`, tar)
    images.push(dangling, kept)

    const report = await runAgent('maintenance', await context({env: {JIL_LOG_DIR: join(work.dir, 'no-logs')}}))
    expect(report.ok).toBe(true)
    expect(report.findings.filter((f) => f.id === 'prune-failed:images')).toEqual([])
    expect(report.details.images_pruned).toBeGreaterThanOrEqual(1)
    const present = (ref: string) => docker('image', 'inspect', ref).then(() => true, () => false)
    expect(await present(dangling)).toBe(false)
    expect(await present(kept)).toBe(true)
    expect(await present(`${base.repository}@${base.digest}`)).toBe(true) // in use by the node's container
  })

  it('prunes this node\'s unused volumes, never one labelled jil.keep=true nor another node\'s', async () => {
    const vol = (name: string, ...labels: string[]) => {
      volumes.push(name)
      return docker('volume', 'create', ...labels.flatMap((l) => ['--label', l]), name)
    }
    const suffix = randomBytes(3).toString('hex')
    await vol(`jil-maint-unused-${suffix}`, `jil.node=${NODE}`)
    await vol(`jil-maint-keep-${suffix}`, `jil.node=${NODE}`, 'jil.keep=true')
    await vol(`jil-maint-other-${suffix}`, `jil.node=${OTHER}`)

    const report = await runAgent('maintenance', await context({env: {JIL_LOG_DIR: join(work.dir, 'no-logs')}}))
    expect(report.ok).toBe(true)
    expect(report.findings.filter((f) => f.id === 'prune-failed:volumes')).toEqual([])
    expect(report.details.volumes_pruned).toBe(1)
    const vols = (await docker('volume', 'ls', '--format', '{{.Name}}')).split('\n')
    expect(vols).not.toContain(`jil-maint-unused-${suffix}`)
    expect(vols).toContain(`jil-maint-keep-${suffix}`)
    expect(vols).toContain(`jil-maint-other-${suffix}`)
  })

  it('warns on disk use at the threshold; with the engine unreachable, the local work is done and the run fails', async () => {
    const report = await runAgent('maintenance', await context({env: {JIL_DISK_WARN_PERCENT: '1', JIL_LOG_DIR: join(work.dir, 'no-logs')}}))
    const percent = report.details.disk_percent as number
    expect(percent).toBeGreaterThan(1)
    expect(report.findings).toContainEqual(expect.objectContaining({id: 'disk-usage', severity: percent >= 90 ? 'critical' : 'warning'}))
    const quiet = await runAgent('maintenance', await context({env: {JIL_DISK_WARN_PERCENT: '100', JIL_LOG_DIR: join(work.dir, 'no-logs')}}))
    expect(quiet.findings.filter((f) => f.id === 'disk-usage')).toEqual(percent >= 100 ? [expect.anything()] : [])

    const tmp = join(work.dir, 'tmp2')
    await mkdir(tmp)
    await writeFile(join(tmp, 'stale'), 'x')
    await utimes(join(tmp, 'stale'), new Date(Date.now() - 30 * DAY), new Date(Date.now() - 30 * DAY))
    const noDocker = await context({runtime: await DockerRuntime.connect('unix:///nonexistent/docker.sock'), env: {JIL_TEMP_DIRS: tmp, JIL_LOG_DIR: join(work.dir, 'no-logs')}})
    const failed = await runAgent('maintenance', noDocker)
    expect(failed).toMatchObject({ok: false, error: {code: 'DOCKER_UNREACHABLE', message: expect.stringContaining('1 temp file(s) deleted')}})
    expect(await exists(join(tmp, 'stale'))).toBe(false)
  })
})
