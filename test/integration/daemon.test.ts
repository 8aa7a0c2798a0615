import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {pino} from 'pino'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {runDaemon, type RunningDaemon} from '../../src/daemon/daemon.js'
import type {NodeHealth} from '../../src/daemon/healthz.js'
import {initNode, renewNode} from '../../src/node/identity.js'
import {containerName, DockerRuntime} from '../../src/node/runtime.js'
import {writeAppliedDesiredState} from '../../src/node/state.js'
import {ManualClock, systemClock} from '../../src/shared/clock.js'
import {certInfo} from '../../src/shared/pki.js'
import type {DesiredService, DesiredState} from '../../src/shared/stack.js'
import {startTestHq, tempDir} from '../helpers/hq.js'
import {joinTestNode, testSettings, userClient, type TestNode} from '../helpers/node.js'

const NODE = 'CH-DMNI-01'
const silent = pino({level: 'silent'})
const IMAGE = process.env.JIL_TEST_IMAGE!
const DIGEST = process.env.JIL_TEST_IMAGE_DIGEST!
const REPOSITORY = IMAGE.replace(/:[^:/]+$/, '')

function service(name: string, o: Partial<DesiredService> = {}): DesiredService {
  return {name, image: 'jil/busybox', repository: REPOSITORY, digest: DIGEST, version: 'v1.0', critical: true, command: ['sleep', '3600'], network: 'none', ...o}
}

function desired(services: DesiredService[], runMode: DesiredState['run_mode'], sequence: number): DesiredState {
  const now = Date.now()
  return {
    kind: 'jil.desired-state/v1',
    node_id: NODE,
    zone: 'CH/FINMA',
    track: 'devnet',
    sequence,
    issued_at: new Date(now).toISOString(),
    expires_at: new Date(now + 3_600_000).toISOString(),
    run_mode: runMode,
    config_version: 1,
    stack_version: 1,
    services,
    unresolved: [],
    key_id: 'test',
    signature: 'test',
  }
}

describe('the node daemon in-process: /healthz and /metrics over HTTP', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let node: TestNode
  let runtime: DockerRuntime
  let daemon: RunningDaemon
  // The healthz cache (5 s) follows this clock: each step moves it past the cache.
  const clock = new ManualClock(new Date())
  const fresh = () => clock.advance(5_001)

  const healthz = async (): Promise<{status: number; body: NodeHealth}> => {
    const r = await fetch(`${daemon.ready.healthz}/healthz`)
    return {status: r.status, body: (await r.json()) as NodeHealth}
  }
  const metrics = async (): Promise<string> => {
    const r = await fetch(`${daemon.ready.healthz}/metrics`)
    expect(r.status).toBe(200)
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/)
    return r.text()
  }
  const metric = (text: string, name: string, labels: Record<string, string> = {}): number | undefined => {
    for (const line of text.split('\n')) {
      if (!line.startsWith(name)) continue
      const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
      if (!m || m[1] !== name) continue
      const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3])
    }
    return undefined
  }
  const removeAll = async () => {
    for (const c of await runtime.list(NODE)) await runtime.remove(c.id)
  }

  beforeAll(async () => {
    t = await startTestHq()
    node = await joinTestNode(t.hq, t.admin, {nodeId: NODE})
    runtime = await DockerRuntime.connect(process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST)
    if (!(await runtime.hasImage(`${REPOSITORY}@${DIGEST}`))) await runtime.pull(REPOSITORY, DIGEST)
    await removeAll()
    // No agent on a schedule: what /healthz sees is set up by the test through the engine itself.
    daemon = await runDaemon({stateDir: node.stateDir, settings: testSettings(node.stateDir), clock, log: silent, version: '0.0.0-test', agents: [], runtime})
  })
  afterAll(async () => {
    await daemon?.stop()
    if (runtime) await removeAll()
    await node?.cleanup()
    await t?.stop()
  })

  it('is ready on a free loopback port; a node with nothing critical yet is healthy', async () => {
    expect(daemon.ready).toEqual({node_id: NODE, healthz: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/)})
    expect(daemon.ready.healthz).not.toMatch(/:0$/)
    const h = await healthz()
    expect(h.status).toBe(200)
    expect(h.body).toMatchObject({status: 'ok', node_id: NODE, run_mode: 'running', reasons: [], critical: []})
    const notFound = await fetch(`${daemon.ready.healthz}/nope`)
    expect(notFound.status).toBe(404)
    const post = await fetch(`${daemon.ready.healthz}/healthz`, {method: 'POST'})
    expect(post.status).toBe(405)
  })

  it('a critical container that is not running fails /healthz; running passes; the answer is cached ≤ 5 s', async () => {
    const id = await runtime.create(NODE, service('api'), containerName(NODE, 'api'))
    fresh()
    let h = await healthz()
    expect(h.status).toBe(503)
    expect(h.body.reasons).toEqual([{code: 'SERVICE_DOWN', message: 'critical service api is created', service: 'api'}])

    await runtime.start(id)
    // Within the cache window the previous answer stands (a load balancer polling fast costs one engine query per 5 s).
    clock.advance(4_000)
    expect((await healthz()).status).toBe(503)
    clock.advance(1_001)
    h = await healthz()
    expect(h.status).toBe(200)
    expect(h.body.critical).toEqual([{name: 'api', state: 'running', health: 'none', up: true}])

    await runtime.stop(id, 1)
    fresh()
    h = await healthz()
    expect(h.status).toBe(503)
    expect(h.body.reasons).toEqual([{code: 'SERVICE_DOWN', message: 'critical service api is exited', service: 'api'}])

    // A non-critical service that is down does not take the node out of the load balancer.
    await runtime.start(id)
    await runtime.create(NODE, service('batch', {critical: false}), containerName(NODE, 'batch'))
    fresh()
    h = await healthz()
    expect(h.status).toBe(200)
    expect(h.body.containers).toMatchObject({running: 1, created: 1})
  })

  it('an unhealthy critical container fails /healthz', async () => {
    const id = await runtime.create(
      NODE,
      service('ledger', {health: {test: ['CMD', 'false'], interval_s: 1, timeout_s: 1, retries: 1}}),
      containerName(NODE, 'ledger'),
    )
    await runtime.start(id)
    for (let i = 0; i < 60 && (await runtime.inspect(id)).health !== 'unhealthy'; i++) await new Promise((r) => setTimeout(r, 500))
    expect((await runtime.inspect(id)).health).toBe('unhealthy')
    fresh()
    const h = await healthz()
    expect(h.status).toBe(503)
    expect(h.body.reasons).toEqual([{code: 'SERVICE_UNHEALTHY', message: 'critical service ledger is unhealthy', service: 'ledger'}])
    await runtime.remove(id)
    fresh()
    expect((await healthz()).status).toBe(200)
  })

  it('the applied desired state decides: paused or stopped fail, a listed critical service without a container is down', async () => {
    const api = service('api')
    await writeAppliedDesiredState(node.stateDir, desired([api], 'paused', 1))
    fresh()
    let h = await healthz()
    expect(h.status).toBe(503)
    expect(h.body).toMatchObject({run_mode: 'paused', reasons: [{code: 'NODE_PAUSED', message: "the node's run mode is paused"}]})

    await writeAppliedDesiredState(node.stateDir, desired([api], 'stopped', 2))
    fresh()
    expect((await healthz()).body.reasons.map((r) => r.code)).toEqual(['NODE_STOPPED'])

    await writeAppliedDesiredState(node.stateDir, desired([api, service('db')], 'running', 3))
    fresh()
    h = await healthz()
    expect(h.status).toBe(503)
    expect(h.body.reasons).toEqual([{code: 'SERVICE_DOWN', message: 'critical service db has no container', service: 'db'}])

    await writeAppliedDesiredState(node.stateDir, desired([api], 'running', 4))
    fresh()
    expect((await healthz()).status).toBe(200)
  })

  it('/metrics: agent runs, skipped ticks, containers by state, certificate expiry, healthz status', async () => {
    // An unscheduled agent run through the daemon's lock; whatever its outcome, it is counted.
    expect(await daemon.runNow('security')).toEqual({ran: true})
    fresh()
    const text = await metrics()
    const ok = metric(text, 'jil_agent_runs_total', {agent: 'security', outcome: 'ok'}) ?? 0
    const failed = metric(text, 'jil_agent_runs_total', {agent: 'security', outcome: 'failed'}) ?? 0
    expect(ok + failed).toBe(1)
    expect(metric(text, 'jil_agent_run_duration_seconds_count', {agent: 'security'})).toBe(1)
    expect(metric(text, 'jil_containers', {state: 'running', node: NODE})).toBe(1)
    expect(metric(text, 'jil_containers', {state: 'created'})).toBe(1)
    expect(metric(text, 'jil_containers', {state: 'exited'})).toBe(0)
    const cert = certInfo(await readFile(join(node.stateDir, 'node.crt'), 'utf8'))
    expect(metric(text, 'jil_node_cert_expiry_timestamp_seconds')).toBe(cert.notAfter.getTime() / 1000)
    expect(metric(text, 'jil_healthz_status')).toBe(1)
    expect(text).toMatch(/^# TYPE jil_agent_skipped_ticks_total counter$/m)
    expect(text).toMatch(/^jil_daemon_process_resident_memory_bytes/m)
  })

  it('keeps working after the certificate file changes (renewal), and fails /healthz once HQ answers CERT_REVOKED', async () => {
    const before = certInfo(await readFile(join(node.stateDir, 'node.crt'), 'utf8'))
    const renewed = await renewNode({stateDir: node.stateDir, clock: systemClock})
    expect(renewed.renewed).toBe(true)
    expect(renewed.serial).not.toBe(before.serial)
    fresh()
    let h = await healthz()
    expect(h.status).toBe(200)
    expect(h.body.cert_not_after).toBe(renewed.not_after)

    const admin = await userClient(t.hq.url, t.admin)
    try {
      await admin.request('DELETE', `/v1/fleet/nodes/${NODE}`, {reason: 'daemon test'})
    } finally {
      await admin.close()
    }
    // Any call to HQ reports the refusal (here the agent report the run wrapper sends).
    await daemon.runNow('security')
    fresh()
    h = await healthz()
    expect(h.status).toBe(503)
    expect(h.body.reasons).toEqual([expect.objectContaining({code: 'CERT_REVOKED'})])
    expect(metric(await metrics(), 'jil_healthz_status')).toBe(0)
  })

  it('refuses a second daemon on a port in use, and a node that has not joined', async () => {
    const port = new URL(daemon.ready.healthz).port
    await expect(
      runDaemon({stateDir: node.stateDir, settings: testSettings(node.stateDir, {JIL_HEALTHZ_LISTEN: `127.0.0.1:${port}`}), clock, log: silent, version: '0', agents: [], runtime}),
    ).rejects.toMatchObject({code: 'HEALTHZ_LISTEN_FAILED'})

    const tmp = await tempDir('jil-daemon-unjoined-')
    try {
      const stateDir = join(tmp.dir, 'state')
      await initNode({stateDir, nodeId: 'CH-DMNI-02', region: 'test', jurisdiction: 'CH/FINMA'})
      await expect(runDaemon({stateDir, settings: testSettings(stateDir), clock, log: silent, version: '0', agents: [], runtime})).rejects.toMatchObject({code: 'NODE_NOT_JOINED'})
    } finally {
      await tmp.cleanup()
    }
  })

  it('stop(): /healthz answers 503 DAEMON_STOPPING while runs drain, then the port closes', async () => {
    const d = await runDaemon({stateDir: node.stateDir, settings: testSettings(node.stateDir), clock, log: silent, version: '0', agents: [], runtime, healthzCacheMs: 0})
    const run = d.runNow('maintenance')
    const stopping = d.stop()
    const h = await d.health()
    expect(h.reasons.map((r) => r.code)).toContain('DAEMON_STOPPING')
    await run
    await stopping
    await expect(fetch(`${d.ready.healthz}/healthz`)).rejects.toThrow()
    expect(await d.runNow('health')).toEqual({ran: false, reason: 'stopped'})
  })
})
