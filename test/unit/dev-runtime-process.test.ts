import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {hasEnded, ProcessRuntime} from '../../src/node/runtime-process.js'
import {JilError} from '../../src/shared/errors.js'
import type {DesiredService} from '../../src/shared/stack.js'
import {tempDir} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {until} from '../helpers/wait.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
const NODE = 'CH-PROC-01'

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    return err instanceof JilError ? err.code : `not a JilError: ${String(err)}`
  }
}

/** The PIDs the runtime recorded per container (what a crashed run leaves for the next one). */
async function recordedPids(dir: string): Promise<Record<string, number>> {
  const rows = JSON.parse(await readFile(join(dir, 'containers.json'), 'utf8')) as {id: string; pid: number | null}[]
  return Object.fromEntries(rows.filter((r) => r.pid !== null).map((r) => [r.id, r.pid!]))
}

/** A killed child of this test process stays a zombie until Node reaps it: that counts as ended. */
async function alive(pid: number): Promise<boolean> {
  return !(await hasEnded(pid))
}

/**
 * The no-container runtime of `jil dev`: real child processes and real health-check commands, an
 * image only after a real pull by digest from the test registry, state kept per node.
 */
describe('ProcessRuntime', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  const opened: ProcessRuntime[] = []
  const open = async (signed = true) => {
    const rt = await ProcessRuntime.open({dir: join(tmp.dir, 'rt'), signed: async () => signed, stopTimeoutS: 2})
    opened.push(rt)
    return rt
  }

  beforeEach(async () => {
    tmp = await tempDir('jil-procrt-')
  })
  afterEach(async () => {
    for (const rt of opened.splice(0)) await rt.close()
    await tmp.cleanup()
  })

  it('refuses to pull a digest HQ did not sign, and to create from an image it does not have', async () => {
    const rt = await open(false)
    const digest = 'sha256:' + 'ab'.repeat(32)
    expect(await codeOf(rt.pull('127.0.0.1:1/jil/demo', digest))).toBe('PULL_FAILED')
    expect(await rt.hasImage(`127.0.0.1:1/jil/demo@${digest}`)).toBe(false)
    const s: DesiredService = {name: 'api', image: 'jil/demo', repository: '127.0.0.1:1/jil/demo', digest, version: 'v1.0', critical: true, command: ['sleep', '30']}
    expect(await codeOf(rt.create(NODE, s, 'jil-ch-proc-01-api'))).toBe('DOCKER_NOT_FOUND')
  })

  describe.runIf(REGISTRY)('with an image pulled from the test registry', () => {
    let repository: string
    let digest: string
    let svc: (extra?: Partial<DesiredService>) => DesiredService

    beforeEach(async () => {
      repository = `${REGISTRY}/jil/procrt`
      digest = await pushTinyImage('jil/procrt', 'unit', REGISTRY)
      svc = (extra = {}) => ({name: 'api', image: 'jil/procrt', repository, digest, version: 'v1.0', critical: true, command: ['sh', '-c', 'while true; do date > heartbeat; sleep 1; done'], ...extra})
    })

    it('pulls by digest only what the registry serves under that digest', async () => {
      const rt = await open()
      await rt.pull(repository, digest)
      expect(await rt.hasImage(`${repository}@${digest}`)).toBe(true)
      const other = 'sha256:' + '0f'.repeat(32)
      expect(await codeOf(rt.pull(repository, other))).toBe('PULL_FAILED')
      expect(await rt.hasImage(`${repository}@${other}`)).toBe(false)
    })

    it('runs a service as a process: labels, health check, stop, restart, rename, remove', async () => {
      const rt = await open()
      await rt.pull(repository, digest)
      const s = svc({health: {test: ['CMD-SHELL', 'test -f heartbeat'], interval_s: 1, retries: 2}})
      const id = await rt.create(NODE, s, 'jil-ch-proc-01-api')
      expect((await rt.inspect(id)).state).toBe('created')
      await rt.start(id)
      const c = await until('healthy', async () => {
        const x = await rt.inspect(id)
        return x.health === 'healthy' ? x : undefined
      }, 15_000)
      expect(c).toMatchObject({state: 'running', nodeId: NODE, service: 'api', digest, version: 'v1.0', critical: true, exitCode: null})
      expect(await rt.list(NODE)).toHaveLength(1)
      expect(await rt.list('SG-PROC-01')).toEqual([])

      const other = await rt.create(NODE, svc({name: 'worker', command: ['sleep', '30']}), 'jil-ch-proc-01-worker')
      expect(await codeOf(rt.rename(other, 'jil-ch-proc-01-api'))).toBe('DOCKER_ERROR')
      await rt.rename(other, 'jil-ch-proc-01-worker-old')
      expect((await rt.inspect(other)).name).toBe('jil-ch-proc-01-worker-old')

      const first = (await rt.inspect(id)).startedAt
      await rt.stop(id)
      const stopped = await rt.inspect(id)
      expect(stopped.state).toBe('exited')
      expect(stopped.exitCode).not.toBeNull()
      await new Promise((r) => setTimeout(r, 10))
      await rt.restart(id)
      expect((await rt.inspect(id)).state).toBe('running')
      expect((await rt.inspect(id)).startedAt).not.toBe(first)

      await rt.remove(id)
      expect(await codeOf(rt.inspect(id))).toBe('DOCKER_NOT_FOUND')
      expect((await rt.list(NODE)).map((x) => x.name)).toEqual(['jil-ch-proc-01-worker-old'])
    })

    it('reports a failing health check as unhealthy and a command that exits with its code', async () => {
      const rt = await open()
      await rt.pull(repository, digest)
      const sick = await rt.create(NODE, svc({health: {test: ['CMD', 'test', '-f', 'never-there'], interval_s: 1, retries: 2}}), 'sick')
      await rt.start(sick)
      await until('unhealthy', async () => ((await rt.inspect(sick)).health === 'unhealthy' ? true : undefined), 15_000)
      // A check that hangs past its timeout fails (its shell is ended and made anew).
      const hangs = await rt.create(NODE, svc({name: 'hangs', health: {test: ['CMD-SHELL', 'sleep 30'], interval_s: 1, timeout_s: 1, retries: 1}}), 'hangs')
      await rt.start(hangs)
      await until('a hanging check counts as failed', async () => ((await rt.inspect(hangs)).health === 'unhealthy' ? true : undefined), 15_000)
      // CMD form: each argument reaches the command as one word, quotes and spaces included.
      const quoted = await rt.create(NODE, svc({name: 'quoted', command: ['sh', '-c', 'touch "it\'s here"; exec sleep 30'], health: {test: ['CMD', 'test', '-f', "it's here"], interval_s: 1, retries: 3}}), 'quoted')
      await rt.start(quoted)
      await until('healthy with a quoted argument', async () => ((await rt.inspect(quoted)).health === 'healthy' ? true : undefined), 15_000)
      const quits = await rt.create(NODE, svc({name: 'quits', command: ['sh', '-c', 'exit 3']}), 'quits')
      await rt.start(quits)
      const done = await until('exited', async () => {
        const x = await rt.inspect(quits)
        return x.state === 'exited' ? x : undefined
      }, 10_000)
      expect(done.exitCode).toBe(3)
      const missing = await rt.create(NODE, svc({name: 'missing', command: ['/no/such/program']}), 'missing')
      await rt.start(missing)
      expect((await until('exited', async () => {
        const x = await rt.inspect(missing)
        return x.state === 'exited' ? x : undefined
      }, 10_000)).exitCode).toBe(127)
    })

    it('after a crash, a new start ends the orphaned processes and shows their containers exited', async () => {
      const crashed = await ProcessRuntime.open({dir: join(tmp.dir, 'rt'), signed: async () => true})
      await crashed.pull(repository, digest)
      const id = await crashed.create(NODE, svc(), 'jil-ch-proc-01-api')
      await crashed.start(id)
      const recorded = (await recordedPids(join(tmp.dir, 'rt')))[id]!
      expect(await alive(recorded)).toBe(true)
      // Not closed: as if the process had been killed. The next run opens the same dir.
      const next = await open()
      expect(await alive(recorded)).toBe(false)
      const c = await next.inspect(id)
      expect(c.state).toBe('exited')
      expect(await next.hasImage(`${repository}@${digest}`)).toBe(true)
      await next.start(id)
      expect((await next.inspect(id)).state).toBe('running')
    })
  })

  it.runIf(REGISTRY)('close() ends every process it started, and starts nothing after', async () => {
    const rt = await open()
    const digest = await pushTinyImage('jil/procrt', 'unit', REGISTRY)
    await rt.pull(`${REGISTRY}/jil/procrt`, digest)
    const s: DesiredService = {name: 'w', image: 'jil/procrt', repository: `${REGISTRY}/jil/procrt`, digest, version: 'v1', critical: false, command: ['sh', '-c', 'sleep 60 & wait']}
    const id = await rt.create(NODE, s, 'w')
    await rt.start(id)
    const pid = (await recordedPids(join(tmp.dir, 'rt')))[id]!
    expect(await alive(pid)).toBe(true)
    await rt.close()
    expect(await alive(pid)).toBe(false)
    expect(await codeOf(rt.start(id))).toBe('DOCKER_ERROR')
  })
})
