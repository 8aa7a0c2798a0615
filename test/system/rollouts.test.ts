import {mkdir, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {readAppliedDesiredState} from '../../src/node/state.js'
import {jil, jilServe, startHqProcess} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {containersOf, docker, makeTestImage, pushTinyImage, removeContainersOf, type TestImage} from '../helpers/images.js'
import {until} from '../helpers/wait.js'

const IMAGE = process.env.JIL_TEST_IMAGE
const DOCKER = process.env.JIL_TEST_DOCKER_HOST
const REGISTRY = process.env.JIL_TEST_REGISTRY

const ZONE = 'JP/JFSA'
const OPERATOR = 'Sakura Nodes KK'
const NODES = ['JP-RO-01', 'JP-RO-02', 'JP-RO-03'] as const
const DEVNET_NODE = 'JP-RO-09'
const VERSIONS = ['v1.0', 'v2.0', 'v3.0', 'v4.0', 'v5.0'] as const
type Version = (typeof VERSIONS)[number]

/**
 * How v3.0 fails on the third node only, as a real unhealthy container on the real engine, with no
 * race against the rollout: every container of the service claims, when it first starts, the next
 * free ordinal of its image in a directory all nodes' containers share (a bind mount; `mkdir` is
 * atomic), and its health check fails while `/flags/bad` lists `<its image's marker>.<its ordinal>`.
 * The test lists v3.0's third container before the rollout starts; with max-parallel 1 the nodes
 * move in position order, so JP-RO-01 and JP-RO-02 get v3.0 containers 1 and 2 (healthy) and
 * JP-RO-03 gets container 3, which never turns healthy: the node's update agent puts its previous
 * container back and reports the replace failed. The ordinal is kept in the container's own file
 * system, so a restart by the health agent does not claim a new one.
 */
const CLAIM = '[ -f /tmp/ordinal ] || { m=$(cat /marker); i=1; until mkdir "/flags/$m.$i" 2>/dev/null; do i=$((i+1)); done; echo "$m.$i" > /tmp/ordinal; }; exec sleep 3600'
const HEALTH = 'test -f /ready && test -f /tmp/ordinal && ! grep -qxF "$(cat /tmp/ordinal)" /flags/bad'

type RolloutNodeView = {node_id: string; position: number; state: string; started_at: string | null; healthy_since: string | null; finished_at: string | null; error: string | null}
type RolloutView = {id: string; state: string; reason: string | null; digest: string; version: string; counts: Record<string, number>; nodes: RolloutNodeView[]}
/** The details of the rollout driver's audit entries: the nodes each step moved, and the rollout's own move. */
type AuditDetails = {nodes?: {node_id: string; from: string; to: string; error?: string}[]; from?: string; to?: string; reason?: string | null}
type AppContainer = {name: string; state: string; health: string; image: string; digest: string}

const OPEN = new Set(['running', 'paused', 'reverting'])

/** What `jil fleet rollout status` showed, in order, and the invariants of a one-at-a-time rollout over it. */
function expectOneAtATime(views: readonly RolloutView[]): void {
  for (const v of views) {
    const moving = v.nodes.filter((n) => n.state === 'upgrading')
    expect(moving.length, `more than one node upgrading: ${JSON.stringify(v.nodes)}`).toBeLessThanOrEqual(1)
    // Position order: every node before the one upgrading is done, every node after it still pending.
    for (const m of moving) {
      for (const n of v.nodes) {
        if (n.position < m.position) expect(n.state, JSON.stringify(v.nodes)).toBe('done')
        if (n.position > m.position) expect(n.state, JSON.stringify(v.nodes)).toBe('pending')
      }
    }
  }
}

/** The order in which nodes were first seen upgrading. */
function firstSeenUpgrading(views: readonly RolloutView[]): string[] {
  const order: string[] = []
  for (const v of views) for (const n of v.nodes) if (n.state === 'upgrading' && !order.includes(n.node_id)) order.push(n.node_id)
  return order
}

/**
 * Three testnet nodes of one zone, each a real `jil daemon` child process with its own state dir,
 * sharing the test engine (containers labelled per node), driven by a real `jil hq serve` whose
 * rollout driver ticks every 300 ms; everything the user does goes through the CLI with --json.
 */
describe.runIf(IMAGE && DOCKER && REGISTRY)('rollouts with real node daemons on a real engine', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let serve: Awaited<ReturnType<typeof jilServe>>
  let hqDir: string
  let env: NodeJS.ProcessEnv
  let flagsDir: string
  const daemons = new Map<string, Awaited<ReturnType<typeof jilServe>>>()
  const states = new Map<string, string>()
  const images = {} as Record<Version, TestImage>
  let unpromoted: string
  const ref = (v: Version) => `jil/busybox@${images[v].digest}`
  const as = (who: string) => ['--user', join(tmp.dir, `${who}.json`)]
  const run = (args: string[]) => jil(args, env)
  const ok = async (args: string[]) => {
    const r = await run(args)
    expect(r.code, `jil ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0)
    return r
  }
  const fails = async (args: string[], code: number) => {
    const r = await run([...args, '--json'])
    expect(r.code, `jil ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(code)
    return r.json().error as {code: string; message: string; hint?: string}
  }

  const status = async (id: string): Promise<RolloutView> => (await ok(['fleet', 'rollout', 'status', id, '--json', ...as('vera')])).json().rollouts[0]
  /** Polls the rollout's status as a viewer until `done` holds, keeping every view in `seen`. */
  async function follow(id: string, done: (v: RolloutView) => boolean, seen: RolloutView[] = [], timeoutMs = 120_000): Promise<RolloutView> {
    const end = Date.now() + timeoutMs
    while (Date.now() < end) {
      const v = await status(id)
      seen.push(v)
      if (done(v)) return v
      await sleep(300)
    }
    throw new Error(`rollout ${id} did not get there in time; last seen: ${JSON.stringify(seen.at(-1))}`)
  }
  const ended = (v: RolloutView) => !OPEN.has(v.state)

  async function upgrade(args: string[]): Promise<RolloutView> {
    const v = (await ok(['fleet', 'upgrade', '--jurisdiction', ZONE, ...args, '--json', ...as('olga')])).json() as RolloutView
    expect(v).toMatchObject({id: expect.stringMatching(/^ro_[0-9a-z]{20}$/), state: 'running'})
    expect(v.nodes.map((n) => [n.node_id, n.position])).toEqual(NODES.map((n, i) => [n, i + 1]))
    return v
  }

  /** The node's containers on the engine, with their health (the node's label scopes them). */
  async function appContainers(nodeId: string): Promise<AppContainer[]> {
    return Promise.all(
      (await containersOf(nodeId)).map(async (c) => {
        const x = JSON.parse(await docker('inspect', '--format', '{{json .}}', c.id)) as {State: {Status: string; Health?: {Status: string}}; Config: {Image: string; Labels: Record<string, string>}}
        return {name: c.name, state: x.State.Status, health: x.State.Health?.Status ?? 'none', image: x.Config.Image, digest: x.Config.Labels['jil.digest'] ?? ''}
      }),
    )
  }

  /** Waits until the node runs exactly one container of the service, from `v`'s digest, running and healthy. */
  async function runsOnly(nodeId: string, v: Version): Promise<AppContainer> {
    const img = images[v]
    return until(`${nodeId} running only ${v} (${img.digest}), healthy`, async () => {
      const cs = await appContainers(nodeId)
      const c = cs[0]
      return cs.length === 1 && c && c.state === 'running' && c.health === 'healthy' && c.image === `${img.repository}@${img.digest}` && c.digest === img.digest ? c : undefined
    })
  }

  /** The versions HQ lists for the zone's testnet nodes (from their latest heartbeats). */
  async function fleetVersions(): Promise<Record<string, string | null | undefined>> {
    const nodes = (await ok(['fleet', 'nodes', '--jurisdiction', ZONE, '--json', ...as('vera')])).json().nodes as {id: string; versions: Record<string, string | null>}[]
    return Object.fromEntries(nodes.filter((n) => (NODES as readonly string[]).includes(n.id)).map((n) => [n.id, n.versions.app]))
  }

  /** The node moves the rollout driver's entries record, in ledger order (rollout.start lists the nodes by id only). */
  const nodeSteps = (audit: {action: string; details: AuditDetails}[]) => audit.filter((e) => e.action !== 'rollout.start').flatMap((e) => (e.details.nodes ?? []).map((s) => ({...s, action: e.action})))

  /** Audit entries about a rollout, oldest first, once the driver's last one (its end) is in the ledger. */
  async function rolloutAudit(id: string, last: string): Promise<{action: string; actor: {type: string; id: string}; details: AuditDetails}[]> {
    return until(`the audit entries of ${id} up to ${last}`, async () => {
      const entries = (await ok(['audit', 'log', '--subject', id, '--limit', '1000', '--json'])).json().entries as {seq: number; action: string; actor: {type: string; id: string}; details: AuditDetails}[]
      return entries.some((e) => e.action === last) ? entries.sort((a, b) => a.seq - b.seq) : undefined
    })
  }

  async function startDaemon(nodeId: string): Promise<void> {
    const nodeEnv = {
      JIL_DOCKER_HOST: DOCKER,
      JIL_HEALTHZ_LISTEN: '127.0.0.1:0',
      JIL_JITTER: '0s',
      JIL_DRAIN: '0s',
      // A heartbeat every 2 s; the update runs at start and on each refresh a rollout sends.
      JIL_HEALTH_EVERY: '2s',
      JIL_UPDATE_EVERY: '1h',
      JIL_UPDATE_HEALTH_TIMEOUT: '30s',
      JIL_LOG_LEVEL: 'warn',
    }
    const d = await jilServe(['daemon', '--state-dir', states.get(nodeId)!, '--json'], {...env, ...nodeEnv})
    expect(d.ready).toMatchObject({node_id: nodeId})
    daemons.set(nodeId, d)
  }

  beforeAll(async () => {
    tmp = await tempDir('jil-rollout-sys-')
    flagsDir = join(tmp.dir, 'flags')
    await mkdir(flagsDir)
    env = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_DATABASE_URL: '', JIL_HQ_URL: '', JIL_STATE_DIR: '', JIL_NODE_ID: '', JIL_ROLLOUT_TICK_MS: '300'}
    // Five releases of jil/busybox, each a distinct digest (built while HQ starts).
    const made = Promise.all(VERSIONS.map(() => makeTestImage()))
    made.catch(() => {}) // awaited below; not an unhandled rejection should HQ fail to start first
    const hq = await startHqProcess(tmp.dir, env)
    serve = hq.serve
    hqDir = hq.hqDir
    await Promise.all(([['ci', 'ci-pipeline'], ['olga', 'ops-lead'], ['vera', 'viewer']] as const).map(([name, role]) => ok(['hq', 'user', 'add', name, '--role', role, '--out', join(tmp.dir, `${name}.json`)])))

    // Signed and approved in any order, promoted to testnet in version order (versions on a track only go up).
    for (const [i, img] of (await made).entries()) images[VERSIONS[i]!] = img
    await Promise.all(VERSIONS.map((v) => ok(['hq', 'sign', `${images[v].repository}:${images[v].tag}`, '--version', v, '--commit', 'abcdef1', ...as('ci')])))
    await Promise.all(VERSIONS.map((v) => ok(['hq', 'approve', `${images[v].repository}@${images[v].digest}`, '--track', 'testnet', ...as('olga')])))
    for (const v of VERSIONS) await ok(['hq', 'promote', `${images[v].repository}@${images[v].digest}`, '--to', 'testnet', ...as('olga')])
    // A release signed onto devnet only.
    unpromoted = await pushTinyImage('jil/busybox', 'ro-unpromoted')
    await ok(['hq', 'sign', `${REGISTRY}/jil/busybox:ro-unpromoted`, '--version', 'v9.0', '--commit', 'abcdef9', ...as('ci')])

    const stack = {
      services: [
        {
          name: 'app',
          image: 'jil/busybox',
          command: ['sh', '-c', CLAIM],
          network: 'none',
          critical: true,
          mounts: [{type: 'bind', source: flagsDir, target: '/flags'}],
          health: {test: ['CMD-SHELL', HEALTH], interval_s: 1, timeout_s: 5, retries: 2},
        },
      ],
    }
    await writeFile(join(tmp.dir, 'stack.json'), JSON.stringify(stack))
    await ok(['hq', 'stack', 'set', '--track', 'testnet', join(tmp.dir, 'stack.json'), ...as('olga')])
    await ok(['hq', 'stack', 'pin', '--track', 'testnet', 'app', 'v1.0', ...as('olga')])

    await ok(['hq', 'operator', 'add', OPERATOR, '--kyc', 'approved'])
    const admitted = [...NODES.map((n) => [n, 'testnet'] as const), [DEVNET_NODE, 'devnet'] as const]
    await Promise.all(
      admitted.map(async ([id, track]) => {
        const state = join(tmp.dir, 'nodes', id)
        states.set(id, state)
        const token = (await ok(['hq', 'token', 'create', '--node-id', id, '--jurisdiction', ZONE, '--operator', OPERATOR, '--track', track, '--json'])).json().token as string
        await ok(['node', 'init', '--node-id', id, '--region', 'ap-tokyo', '--jurisdiction', ZONE, '--operator', OPERATOR, '--hq', serve.ready.url, '--state-dir', state])
        await ok(['node', 'join', '--token', token, '--ca-fingerprint', hq.fingerprint, '--state-dir', state])
      }),
    )
    // The devnet node never runs a daemon: it is only there to be refused.
    await Promise.all(NODES.map((n) => startDaemon(n)))
    for (const n of NODES) await runsOnly(n, 'v1.0')
    await until('all three nodes active on v1.0 at HQ', async () => {
      const nodes = (await ok(['fleet', 'nodes', '--jurisdiction', ZONE, '--json'])).json().nodes as {id: string; status: string; versions: Record<string, string>}[]
      const mine = nodes.filter((n) => (NODES as readonly string[]).includes(n.id))
      return mine.length === 3 && mine.every((n) => n.status === 'active' && n.versions.app === 'v1.0') ? mine : undefined
    })
  }, 240_000)

  afterAll(async () => {
    await Promise.all(
      [...daemons.values()].map(async (d) => {
        if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill('SIGTERM')
        await d.exited
      }),
    )
    if (serve && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGTERM')
      await serve.exited
    }
    for (const n of [...NODES, DEVNET_NODE]) await removeContainersOf(n).catch(() => {})
    await tmp?.cleanup()
  }, 60_000)

  it('A 3-node rollout in one zone advances one node at a time', async () => {
    const started = await upgrade(['--image', ref('v2.0'), '--min-healthy', '2s', '--health-timeout', '60s'])
    expect(started).toMatchObject({version: 'v2.0', digest: images['v2.0'].digest})
    const seen: RolloutView[] = []
    const end = await follow(started.id, ended, seen)

    expectOneAtATime(seen)
    const order = firstSeenUpgrading(seen)
    expect(order.length).toBeGreaterThan(0)
    expect(order).toEqual(NODES.filter((n) => order.includes(n)))
    expect(end.state).toBe('succeeded')
    expect(end.reason).toBeNull()
    expect(end.nodes.map((n) => [n.node_id, n.state])).toEqual(NODES.map((n) => [n, 'done']))
    // Each node started after the one before it was done.
    for (const [i, n] of end.nodes.entries()) {
      expect(n.started_at).not.toBeNull()
      expect(n.finished_at).not.toBeNull()
      if (i > 0) expect(Date.parse(n.started_at!)).toBeGreaterThanOrEqual(Date.parse(end.nodes[i - 1]!.finished_at!))
    }
    for (const n of NODES) await runsOnly(n, 'v2.0')
    expect(await fleetVersions()).toEqual(Object.fromEntries(NODES.map((n) => [n, 'v2.0'])))
    // The ledger, whatever the polling saw: each node started only once the one before it was done.
    const audit = await rolloutAudit(started.id, 'rollout.succeeded')
    const steps = nodeSteps(audit).map((s) => [s.node_id, s.from, s.to])
    expect(steps).toEqual(NODES.flatMap((n) => [[n, 'pending', 'upgrading'], [n, 'upgrading', 'done']]))
    expect(audit.at(-1)).toMatchObject({action: 'rollout.succeeded', actor: {type: 'hq', id: 'rollouts'}})
  }, 150_000)

  it('refuses bad upgrades and rollout actions through the CLI', async () => {
    // Not IMAGE@sha256:…: a usage error before anything is sent.
    expect((await fails(['fleet', 'upgrade', '--jurisdiction', ZONE, '--image', 'jil/busybox:latest', ...as('olga')], 2)).code).toBe('IMAGE_INVALID')
    // A devnet node follows its newest devnet manifest.
    expect(await fails(['fleet', 'upgrade', DEVNET_NODE, '--image', ref('v2.0'), ...as('olga')], 1)).toMatchObject({code: 'ROLLOUT_DEVNET', message: expect.stringContaining(DEVNET_NODE)})
    // Signed onto devnet, never promoted to testnet.
    const off = await fails(['fleet', 'upgrade', '--jurisdiction', ZONE, '--image', `jil/busybox@${unpromoted}`, ...as('olga')], 1)
    expect(off).toMatchObject({code: 'NOT_ON_TRACK', message: expect.stringContaining('testnet')})
    // A finished rollout neither pauses nor resumes nor aborts.
    const {rollouts} = (await ok(['fleet', 'rollout', 'status', '--json', ...as('vera')])).json() as {rollouts: RolloutView[]}
    const done = rollouts.find((r) => r.state === 'succeeded')!
    expect(done).toBeDefined()
    for (const action of ['pause', 'resume', 'abort']) {
      expect((await fails(['fleet', 'rollout', action, done.id, ...as('olga')], 1)).code).toBe('ROLLOUT_STATE')
    }
    // A viewer reads rollouts but starts none.
    expect((await fails(['fleet', 'upgrade', '--jurisdiction', ZONE, '--image', ref('v3.0'), ...as('vera')], 1)).code).toBe('FORBIDDEN')
    expect((await fails(['fleet', 'rollout', 'pause', done.id, ...as('vera')], 1)).code).toBe('FORBIDDEN')
    // None of this started a rollout.
    expect(((await ok(['fleet', 'rollout', 'status', '--json'])).json().rollouts as RolloutView[]).map((r) => r.id)).toEqual([done.id])
  }, 60_000)

  it('A node whose new container never gets healthy halts it and auto-revert restores all touched nodes', async () => {
    const marker = await docker('run', '--rm', '--network', 'none', `${images['v3.0'].repository}@${images['v3.0'].digest}`, 'cat', '/marker')
    expect(marker).toMatch(/^[0-9a-f]{16}$/)
    await writeFile(join(flagsDir, 'bad'), `${marker}.3\n`)

    const started = await upgrade(['--image', ref('v3.0'), '--min-healthy', '2s', '--health-timeout', '60s', '--auto-revert'])
    expect(started).toMatchObject({version: 'v3.0'})
    const seen: RolloutView[] = []
    const end = await follow(started.id, ended, seen)

    // While it ran, one node at a time in position order.
    expectOneAtATime(seen.filter((v) => v.state === 'running'))
    expect(end.state).toBe('reverted')
    expect(end.reason).toContain('JP-RO-03')
    expect(end.reason).not.toContain('JP-RO-01')
    expect(end.nodes.map((n) => [n.node_id, n.state])).toEqual(NODES.map((n) => [n, 'reverted']))
    // The third node's own failure: its update agent reported the replace failed (the health check).
    expect(end.nodes[2]!.error).toMatch(/app failed on the node: UNHEALTHY/)

    // Every touched node runs the previous digest again, healthy, and HQ lists v2.0.
    for (const n of NODES) await runsOnly(n, 'v2.0')
    expect(await fleetVersions()).toEqual(Object.fromEntries(NODES.map((n) => [n, 'v2.0'])))
    for (const n of NODES) {
      // HQ shows the node on v2.0, having applied the latest desired state HQ issued it.
      await until(`${n} in sync at HQ`, async () => {
        const node = (await ok(['fleet', 'node', n, '--json', ...as('vera')])).json()
        return node.versions.app === 'v2.0' && node.state.in_sync === true ? node : undefined
      })
      // HQ's desired state for the node no longer pins v3.0: a dry run from here moves it from v2.0.
      const plan = (await ok(['fleet', 'upgrade', n, '--image', ref('v4.0'), '--dry-run', '--json', ...as('olga')])).json()
      expect(plan.nodes).toEqual([{node_id: n, track: 'testnet', services: [{service: 'app', from: {version: 'v2.0', digest: images['v2.0'].digest}}]}])
      // And the document the node verified and applied says v2.0, carrying the user's signed rollback (v2.0 < v3.0).
      const applied = await readAppliedDesiredState(states.get(n)!)
      const app = applied!.services.find((s) => s.name === 'app')!
      expect(app).toMatchObject({version: 'v2.0', digest: images['v2.0'].digest})
      expect(app.rollback).toMatchObject({payload: {purpose: 'rollback', version: 'v2.0', digest: images['v2.0'].digest}})
    }
    // The ledger tells it in order: the first two nodes done on v3.0, then the third failed, which
    // turned the rollout to reverting with every touched node in the same step; then each reverted.
    const audit = await rolloutAudit(started.id, 'rollout.reverted')
    const steps = nodeSteps(audit)
    expect(steps.filter((s) => s.to === 'done' || s.to === 'failed').map((s) => [s.node_id, s.to])).toEqual([
      ['JP-RO-01', 'done'],
      ['JP-RO-02', 'done'],
      ['JP-RO-03', 'failed'],
    ])
    const turn = audit.filter((e) => e.action === 'rollout.reverting')
    expect(turn).toHaveLength(1)
    expect(turn[0]!.details.reason).toContain('JP-RO-03')
    expect((turn[0]!.details.nodes ?? []).filter((s) => s.to === 'reverting').map((s) => s.node_id)).toEqual([...NODES])
    expect(steps.filter((s) => s.to === 'reverted').map((s) => s.node_id).sort()).toEqual([...NODES])
    expect(steps.filter((s) => s.to === 'upgrading').map((s) => s.node_id)).toEqual([...NODES])
  }, 180_000)

  it('HQ killed mid-rollout resumes on restart', async () => {
    const url = serve.ready.url as string
    const port = new URL(url).port
    // A long min-healthy, so the second node is still waiting it out while the CLI lists it and HQ dies, however loaded the machine.
    const started = await upgrade(['--image', ref('v4.0'), '--min-healthy', '20s', '--health-timeout', '120s'])
    const seen: RolloutView[] = []
    // The second node runs v4.0 healthy and waits out min-healthy: HQ dies now.
    const mid = await follow(started.id, (v) => v.nodes[1]!.state === 'upgrading' && v.nodes[1]!.healthy_since !== null, seen)
    expect(mid.nodes.map((n) => n.state)).toEqual(['done', 'upgrading', 'pending'])
    const listed = (await ok(['fleet', 'nodes', '--jurisdiction', ZONE, '--json', ...as('vera')])).json().nodes as {id: string; status: string}[]
    expect(Object.fromEntries(listed.filter((n) => (NODES as readonly string[]).includes(n.id)).map((n) => [n.id, n.status]))).toEqual({'JP-RO-01': 'active', 'JP-RO-02': 'upgrading', 'JP-RO-03': 'active'})

    serve.child.kill('SIGKILL')
    await serve.exited
    expect((await run(['fleet', 'rollout', 'status', started.id, '--json'])).code).toBe(1)
    // The same data dir and port: the daemons know HQ by the URL in their node.env.
    serve = await jilServe(['hq', 'serve', '--data-dir', hqDir, '--listen', `127.0.0.1:${port}`, '--json'], env)
    expect(serve.ready.url).toBe(url)

    const end = await follow(started.id, ended, seen, 200_000)
    expectOneAtATime(seen)
    expect(end.id).toBe(started.id)
    expect(end.state).toBe('succeeded')
    expect(end.nodes.map((n) => [n.node_id, n.state])).toEqual(NODES.map((n) => [n, 'done']))
    for (const n of NODES) await runsOnly(n, 'v4.0')
    expect(await fleetVersions()).toEqual(Object.fromEntries(NODES.map((n) => [n, 'v4.0'])))

    // No node was started twice: the ledger holds exactly one pending → upgrading step per node, in position order.
    const audit = await rolloutAudit(started.id, 'rollout.succeeded')
    expect(audit.filter((e) => e.action === 'rollout.start')).toHaveLength(1)
    const steps = nodeSteps(audit)
    expect(steps.filter((s) => s.to === 'upgrading').map((s) => [s.node_id, s.from])).toEqual(NODES.map((n) => [n, 'pending']))
    expect(steps.filter((s) => s.to === 'done').map((s) => s.node_id)).toEqual([...NODES])
  }, 300_000)

  it('A canary of 1 stops after the first node until resumed', async () => {
    const started = await upgrade(['--image', ref('v5.0'), '--min-healthy', '2s', '--health-timeout', '60s', '--canary', '1'])
    const seen: RolloutView[] = []
    const paused = await follow(started.id, (v) => v.state !== 'running', seen)
    expectOneAtATime(seen)
    expect(paused.state).toBe('paused')
    expect(paused.reason).toMatch(/canary/)
    expect(paused.nodes.map((n) => n.state)).toEqual(['done', 'pending', 'pending'])

    // It stays there: no second node starts while paused.
    const watchUntil = Date.now() + 3_000
    let looks = 0
    while (Date.now() < watchUntil || looks < 3) {
      const v = await status(started.id)
      expect(v.state).toBe('paused')
      expect(v.nodes.map((n) => n.state)).toEqual(['done', 'pending', 'pending'])
      looks++
      await sleep(300)
    }
    // Its nodes belong to an open rollout: no second one over them.
    const conflict = await fails(['fleet', 'upgrade', 'JP-RO-02', '--image', ref('v5.0'), ...as('olga')], 1)
    expect(conflict).toMatchObject({code: 'ROLLOUT_CONFLICT', message: expect.stringContaining(started.id)})
    await runsOnly('JP-RO-01', 'v5.0')
    await runsOnly('JP-RO-02', 'v4.0')

    const resumed = (await ok(['fleet', 'rollout', 'resume', started.id, '--json', ...as('olga')])).json() as RolloutView
    expect(resumed).toMatchObject({id: started.id, state: 'running'})
    const end = await follow(started.id, ended, seen)
    expectOneAtATime(seen)
    expect(end.state).toBe('succeeded')
    expect(end.nodes.map((n) => [n.node_id, n.state])).toEqual(NODES.map((n) => [n, 'done']))
    for (const n of NODES) await runsOnly(n, 'v5.0')
  }, 150_000)

  it('jil fleet rollback takes a node back to the version before its last upgrade', async () => {
    const r = (await ok(['fleet', 'rollback', 'JP-RO-01', '--json', ...as('olga')])).json()
    expect(r).toMatchObject({
      node_id: 'JP-RO-01',
      track: 'testnet',
      applied: true,
      command_id: expect.stringMatching(/^cmd_/),
      services: [{service: 'app', from: {version: 'v5.0', digest: images['v5.0'].digest}, to: {version: 'v4.0', digest: images['v4.0'].digest}}],
    })
    await runsOnly('JP-RO-01', 'v4.0')
    await until('HQ listing JP-RO-01 on v4.0', async () => {
      const v = await fleetVersions()
      return v['JP-RO-01'] === 'v4.0' ? v : undefined
    })
    expect(await fleetVersions()).toEqual({'JP-RO-01': 'v4.0', 'JP-RO-02': 'v5.0', 'JP-RO-03': 'v5.0'})
    await runsOnly('JP-RO-02', 'v5.0')
  }, 90_000)
})
