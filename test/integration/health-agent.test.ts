import {rm} from 'node:fs/promises'
import {createServer} from 'node:http'
import type {AddressInfo} from 'node:net'
import {join} from 'node:path'

import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {healthAgent} from '../../src/node/agents/health.js'
import {runAgent} from '../../src/node/agents/run.js'
import type {AgentContext} from '../../src/node/agents/types.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import {containerName, DockerRuntime} from '../../src/node/runtime.js'
import {lockContainers, STATE_FILES, writeAppliedDesiredState} from '../../src/node/state.js'
import type {FleetNode, Heartbeat} from '../../src/shared/api.js'
import {ManualClock} from '../../src/shared/clock.js'
import {HqClient} from '../../src/shared/hq-client.js'
import type {DesiredService, DesiredState} from '../../src/shared/stack.js'
import {startTestHq} from '../helpers/hq.js'
import {removeContainersOf, testBaseImage, testService} from '../helpers/images.js'
import {joinTestNode, agentContexts, userClient, type TestNode} from '../helpers/node.js'

const IMAGE = process.env.JIL_TEST_IMAGE
if (!IMAGE && process.env.CI) throw new Error('JIL_TEST_IMAGE is not set: run `eval "$(scripts/test-services.sh env)"` first')

const NODE = 'SG-HLTHAG-01'
/** Another node on the same engine: never touched. */
const OTHER = 'SG-HLTHAG-02'
const DAY = 86_400_000

async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  for (const start = Date.now(); Date.now() - start < timeoutMs; ) {
    if (await fn()) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** An agent context whose HQ client records each heartbeat on its way to the real HQ. */
function recordingHeartbeats(ctx: AgentContext): {ctx: AgentContext; sent: Heartbeat[]} {
  const sent: Heartbeat[] = []
  const hq = async () => {
    const real = await ctx.hq()
    return Object.assign(Object.create(real) as HqClient, {
      heartbeat: (hb: Heartbeat) => {
        sent.push(hb)
        return real.heartbeat(hb)
      },
    })
  }
  return {ctx: {...ctx, hq}, sent}
}

describe.runIf(IMAGE)('health agent on the real engine', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let node: TestNode
  let runtime: DockerRuntime
  const base = IMAGE ? testBaseImage() : {registry: '', repository: '', digest: ''}
  const {context, closeAll} = agentContexts(() => node)
  const service = (name: string, extra: Partial<DesiredService> = {}): DesiredService => testService(name, extra)
  const run = async (nodeId: string, s: DesiredService) => {
    const id = await runtime.create(nodeId, s, containerName(nodeId, s.name))
    await runtime.start(id)
    return id
  }
  const exited = (id: string) => async () => (await runtime.inspect(id)).state === 'exited'
  const startedAt = async (id: string) => (await runtime.inspect(id)).startedAt

  beforeAll(async () => {
    t = await startTestHq({registry: base.registry})
    node = await joinTestNode(t.hq, t.admin, {nodeId: NODE, zone: 'SG/MAS'})
    runtime = await DockerRuntime.connect(process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST)
    for (const n of [NODE, OTHER]) await removeContainersOf(n)
    // Other tests prune: make sure the base image is here.
    if (!(await runtime.hasImage(`${base.repository}@${base.digest}`))) await runtime.pull(base.repository, base.digest)
  })
  afterEach(async () => {
    await closeAll()
    for (const n of [NODE, OTHER]) await removeContainersOf(n)
  })
  afterAll(async () => {
    await t?.stop()
    await node?.cleanup()
  })

  it('restarts an unhealthy container and posts the heartbeat to HQ', async () => {
    const id = await run(NODE, service('web', {health: {test: ['CMD-SHELL', 'test -f /tmp/ok'], interval_s: 1, timeout_s: 1, retries: 1}}))
    await waitFor('web to turn unhealthy', async () => (await runtime.inspect(id)).health === 'unhealthy')
    const before = await startedAt(id)
    const {ctx, sent} = recordingHeartbeats(await context())
    const report = await runAgent('health', ctx)
    expect(report).toMatchObject({ok: true, details: {restarted: ['web'], heartbeat: 'sent', containers: {total: 1, running: 1}}})
    expect(report.findings).toContainEqual(expect.objectContaining({id: 'container-restarted:web', severity: 'warning'}))
    expect(await startedAt(id)).not.toBe(before)

    expect(sent).toHaveLength(1)
    const hb = sent[0]!
    expect(hb).toMatchObject({node_id: NODE, run_mode: 'running', desired_sequence: 0, agent_version: '0.0.0-test'})
    expect(hb.services).toEqual([{name: 'web', critical: false, state: 'running', health: expect.any(String), digest: base.digest, version: 'v1.0'}])
    const id0 = await loadNodeIdentity(node.stateDir)
    expect(hb.cert).toEqual({serial: id0.cert.serial, not_after: id0.cert.notAfter.toISOString()})
    expect(hb.system.memory_total_bytes).toBeGreaterThan(0)

    const admin = await userClient(t.hq.url, t.admin)
    try {
      const seen = await admin.request<FleetNode>('GET', `/v1/fleet/nodes/${NODE}`)
      expect(seen.last_heartbeat_at).not.toBeNull()
      expect(seen.versions).toEqual({web: 'v1.0'})
      expect(seen.system?.memory_total_bytes).toBe(hb.system.memory_total_bytes)
    } finally {
      await admin.close()
    }
  })

  it('restarts a crash-looping container with backoff until the budget is spent, then reports it and leaves it', async () => {
    const id = await run(NODE, service('crashy', {command: ['sh', '-c', 'exit 1']}))
    await waitFor('crashy to exit', exited(id))
    const clock = new ManualClock(new Date())
    const ctx = await context({clock, env: {JIL_RESTART_BUDGET: '3', JIL_RESTART_WINDOW: '1h'}})
    const health = async () => {
      const r = await runAgent('health', ctx)
      await waitFor('crashy to exit again', exited(id))
      return r
    }

    expect((await health()).details).toMatchObject({restarted: ['crashy'], deferred: []})
    // Right after a restart: backoff (10 s), not another restart.
    let before = await startedAt(id)
    const deferred = await health()
    expect(deferred.details).toMatchObject({restarted: [], deferred: ['crashy']})
    expect(deferred.findings).toContainEqual(expect.objectContaining({id: 'container-down:crashy', severity: 'warning'}))
    expect(await startedAt(id)).toBe(before)
    clock.advance(10_000)
    expect((await health()).details).toMatchObject({restarted: ['crashy']})
    clock.advance(19_000) // the second wait is 20 s
    expect((await health()).details).toMatchObject({restarted: [], deferred: ['crashy']})
    clock.advance(1_000)
    expect((await health()).details).toMatchObject({restarted: ['crashy']})

    // Three restarts within the hour: the budget is spent.
    clock.advance(5 * 60_000)
    before = await startedAt(id)
    const looping = await health()
    expect(looping).toMatchObject({ok: true, details: {restarted: [], crash_looping: ['crashy']}})
    const finding = looping.findings.find((f) => f.id === 'crash-loop:crashy')
    expect(finding).toMatchObject({severity: 'critical'})
    expect(finding!.evidence).toContain('exit code 1')
    expect(await startedAt(id)).toBe(before)
    clock.advance(10 * 60_000)
    expect((await health()).details).toMatchObject({restarted: [], crash_looping: ['crashy']})
    expect(await startedAt(id)).toBe(before)

    // Once the restarts leave the window, it gets another chance.
    clock.advance(60 * 60_000)
    expect((await health()).details).toMatchObject({restarted: ['crashy'], crash_looping: []})
    expect(await startedAt(id)).not.toBe(before)
  })

  it('never touches another node\'s containers on the same engine', async () => {
    const mine = await run(NODE, service('api'))
    const theirs = await run(OTHER, service('api', {command: ['sh', '-c', 'exit 3']}))
    await waitFor('the other node\'s api to exit', exited(theirs))
    const before = await startedAt(theirs)
    const report = await runAgent('health', await context())
    expect(report).toMatchObject({ok: true, details: {restarted: [], containers: {total: 1, running: 1, exited: 0}}})
    const after = await runtime.inspect(theirs)
    expect(after).toMatchObject({state: 'exited', exitCode: 3, startedAt: before})
    expect((await runtime.inspect(mine)).state).toBe('running')
  })

  it('restarts nothing while an update holds the node\'s containers, and reports what it sees', async () => {
    const id = await run(NODE, service('api', {command: ['sh', '-c', 'exit 4']}))
    await waitFor('api to exit', exited(id))
    const before = await startedAt(id)
    const lock = await lockContainers(node.stateDir, 'update')
    try {
      const report = await runAgent('health', await context())
      expect(report).toMatchObject({ok: true, details: {restarted: [], restarts_skipped: 'update in progress', containers: {total: 1, exited: 1}}})
      expect(await startedAt(id)).toBe(before)
    } finally {
      await lock.release()
    }
    // Once the update is done, the next run restarts it.
    expect(await runAgent('health', await context())).toMatchObject({ok: true, details: {restarted: ['api']}})
  })

  it('reports the desired services (missing ones too) and restarts nothing when the run mode is stopped', async () => {
    const id = await run(NODE, service('worker', {command: ['sh', '-c', 'exit 2']}))
    await waitFor('worker to exit', exited(id))
    const desired = (runMode: DesiredState['run_mode']): DesiredState => ({
      kind: 'jil.desired-state/v1',
      node_id: NODE,
      zone: 'SG/MAS',
      track: 'devnet',
      sequence: 7,
      issued_at: new Date().toISOString(),
      expires_at: new Date(Date.now() + DAY).toISOString(),
      run_mode: runMode,
      config_version: 1,
      stack_version: 1,
      services: [service('worker'), service('db', {critical: true})],
      unresolved: [],
      key_id: 'test',
      signature: 'not-checked-here',
    })
    await writeAppliedDesiredState(node.stateDir, desired('stopped'))
    let before = await startedAt(id)
    const {ctx, sent} = recordingHeartbeats(await context())
    const report = await runAgent('health', ctx)
    expect(report).toMatchObject({ok: true, details: {restarted: []}})
    expect(await startedAt(id)).toBe(before)
    expect(sent[0]).toMatchObject({run_mode: 'stopped', desired_sequence: 7, containers: {total: 1, exited: 1}})
    expect(sent[0]!.services).toEqual([
      {name: 'worker', critical: false, state: 'exited', health: 'none', digest: base.digest, version: 'v1.0'},
      {name: 'db', critical: true, state: 'missing', health: 'none', digest: null, version: null},
    ])
    // Running again: the exited worker is restarted.
    await writeAppliedDesiredState(node.stateDir, desired('running'))
    expect((await runAgent('health', ctx)).details).toMatchObject({restarted: ['worker']})
    // A service the desired state does not list is the update agent's to remove, not to restart.
    await runtime.stop(id)
    await writeAppliedDesiredState(node.stateDir, {...desired('running'), services: [service('db', {critical: true})]})
    before = await startedAt(id)
    expect((await runAgent('health', ctx)).details).toMatchObject({restarted: []})
    expect(await startedAt(id)).toBe(before)
    await rm(join(node.stateDir, STATE_FILES.desired))
  })

  it('carries CometBFT\'s height and catching_up when a consensus RPC URL is configured, and its error when it cannot be asked', async () => {
    const rpc = createServer((req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(req.url === '/status' ? JSON.stringify({jsonrpc: '2.0', id: -1, result: {sync_info: {latest_block_height: '4242', catching_up: false}}}) : '{}')
    })
    await new Promise<void>((r) => rpc.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(rpc.address() as AddressInfo).port}`
    try {
      const {ctx, sent} = recordingHeartbeats(await context({env: {JIL_COMETBFT_URL: url}}))
      expect(await runAgent('health', ctx)).toMatchObject({ok: true, details: {consensus: {latest_height: 4242, catching_up: false}}})
      expect(sent[0]!.consensus).toEqual({latest_height: 4242, catching_up: false})
    } finally {
      rpc.closeAllConnections()
      await new Promise((r) => rpc.close(r))
    }
    const down = recordingHeartbeats(await context({env: {JIL_COMETBFT_URL: url}}))
    expect((await runAgent('health', down.ctx)).ok).toBe(true)
    expect(down.sent[0]!.consensus).toMatchObject({latest_height: 0, error: expect.stringContaining(`${url}/status`)})
  })

  it('renews the node certificate once 2/3 of its lifetime has passed', async () => {
    const before = await loadNodeIdentity(node.stateDir)
    const {ctx, sent} = recordingHeartbeats(await context({clock: new ManualClock(new Date(Date.now() + 19 * DAY))}))
    expect((await runAgent('health', ctx)).details).toMatchObject({cert: {serial: before.cert.serial, renewed: false}})
    const lifetime = before.cert.notAfter.getTime() - before.cert.notBefore.getTime()
    const later = recordingHeartbeats(await context({clock: new ManualClock(before.cert.notBefore.getTime() + (lifetime * 2) / 3 + 60_000)}))
    const report = await runAgent('health', later.ctx)
    const after = await loadNodeIdentity(node.stateDir)
    expect(after.cert.serial).not.toBe(before.cert.serial)
    expect(report).toMatchObject({ok: true, findings: [], details: {cert: {serial: after.cert.serial, renewed: true}}})
    // The heartbeat went out over the new certificate and names it.
    expect(later.sent[0]!.cert.serial).toBe(after.cert.serial)
    expect(sent[0]!.cert.serial).toBe(before.cert.serial)
  })

  it('fails the run when HQ cannot take the heartbeat, after doing the local work; and when Docker is unreachable', async () => {
    const id = await run(NODE, service('lonely', {command: ['sh', '-c', 'exit 1']}))
    await waitFor('lonely to exit', exited(id))
    const before = await startedAt(id)
    const ctx = await context()
    const me = await loadNodeIdentity(node.stateDir)
    const nowhere = await HqClient.connect('https://127.0.0.1:9', {cert: me.certPem, key: me.keyPem, ca: me.caPem})
    try {
      await expect(healthAgent({...ctx, hq: async () => nowhere})).rejects.toMatchObject({code: 'HQ_UNREACHABLE', message: expect.stringContaining('heartbeat not sent')})
    } finally {
      await nowhere.close()
    }
    expect(await startedAt(id)).not.toBe(before)

    const noDocker = await context({runtime: await DockerRuntime.connect('unix:///nonexistent/docker.sock')})
    const report = await runAgent('health', noDocker)
    expect(report).toMatchObject({ok: false, error: {code: 'DOCKER_UNREACHABLE'}})
  })
})
