import {pino} from 'pino'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {executeCommands, type CommandIo} from '../../src/node/commands.js'
import type {CommandResult, FleetCommand, RunModeChange} from '../../src/shared/api.js'
import {ManualClock} from '../../src/shared/clock.js'
import type {HqClient} from '../../src/shared/hq-client.js'
import {startTestHq} from '../helpers/hq.js'
import {joinTestNode, testAgentContext, userClient, type TestNode} from '../helpers/node.js'

const CH1 = 'CH-FCMD-01'
const CH2 = 'CH-FCMD-02'
const SG1 = 'SG-FCMD-01'
const PENDING = 'CH-FCMD-03'

/** HQ's command store over real mutual TLS: fan-out and audit, long-poll, results, expiry, run-mode actions. */
describe('commands to nodes at HQ', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  const clock = new ManualClock(new Date())
  const nodes: Record<string, TestNode> = {}
  const ctxs: {close(): Promise<void>}[] = []
  let admin: HqClient
  /** A node's own HQ client (its certificate). */
  const nodeClient = async (id: string): Promise<HqClient> => {
    const ctx = await testAgentContext(nodes[id]!, {clock})
    ctxs.push(ctx)
    return ctx.hq()
  }
  /** Answers whatever the node has open, so a test starts from none. */
  const settle = async (c: HqClient) => {
    for (const x of (await c.nodeCommands(0)).commands) await c.commandResult(x.id, {ok: true, summary: 'settled'})
  }
  const auditOf = async (action: string) =>
    (await t.hq.db.query<{subject: string; details: Record<string, unknown>}>('SELECT subject, details FROM audit_pending WHERE action = $1 UNION ALL SELECT subject, details FROM audit_log WHERE action = $1', [action])).rows

  beforeAll(async () => {
    t = await startTestHq({clock})
    for (const [id, zone] of [[CH1, 'CH/FINMA'], [CH2, 'CH/FINMA'], [SG1, 'SG/MAS']] as const) nodes[id] = await joinTestNode(t.hq, t.admin, {nodeId: id, zone, clock})
    admin = await userClient(t.hq.url, t.admin)
    await admin.request('POST', '/v1/fleet/nodes', {node_id: PENDING, zone: 'CH/FINMA', operator: 'Helvetia Nodes AG', track: 'devnet'})
  })
  afterAll(async () => {
    for (const c of ctxs) await c.close()
    await admin?.close()
    for (const n of Object.values(nodes)) await n.cleanup()
    await t?.stop()
  })

  it('fans a command out to a zone\'s active nodes in one transaction with ONE audit entry', async () => {
    const before = (await auditOf('node.command')).length
    const sent = await admin.sendCommand('refresh', {zone: 'CH_FINMA'})
    expect(sent.target).toBe('zone/CH/FINMA')
    // The pending node of that zone gets nothing: only active nodes take commands.
    expect(sent.commands.map((c) => [c.node_id, c.command, c.status, c.deliveries])).toEqual([
      [CH1, 'refresh', 'pending', 0],
      [CH2, 'refresh', 'pending', 0],
    ])
    expect(sent.commands.every((c) => /^cmd_[0-9a-z]{20}$/.test(c.id) && new Date(c.expires_at).getTime() - new Date(c.created_at).getTime() === 15 * 60_000)).toBe(true)
    const audit = await auditOf('node.command')
    expect(audit).toHaveLength(before + 1)
    expect(audit.at(-1)).toEqual({subject: 'zone/CH/FINMA', details: {command: 'refresh', target: 'zone/CH/FINMA', nodes: 2}})

    const all = await admin.sendCommand('cycle', {all: true})
    expect(all.commands.map((c) => c.node_id)).toEqual([CH1, CH2, SG1])
    expect((await auditOf('node.command')).length).toBe(before + 2)

    await expect(admin.sendCommand('refresh', {node: 'CH-NOPE-01'})).rejects.toMatchObject({code: 'NODE_UNKNOWN', status: 404})
    await expect(admin.sendCommand('refresh', {node: PENDING})).rejects.toMatchObject({code: 'NODE_NOT_ACTIVE', status: 409})
    await expect(admin.sendCommand('refresh', {zone: 'JP/JFSA'})).rejects.toMatchObject({code: 'NO_NODES', status: 404})
    await expect(admin.request('POST', '/v1/fleet/commands', {command: 'explode', target: {all: true}})).rejects.toMatchObject({code: 'INVALID_BODY', status: 400})
  })

  it('the long-poll answers at once when commands are pending, marks them delivered, and waits when there are none', async () => {
    const ch1 = await nodeClient(CH1)
    // Both commands of the previous test, oldest first, even with a long wait asked.
    const got = await ch1.nodeCommands(25)
    expect(got.commands.map((c) => [c.command, c.deliveries])).toEqual([
      ['refresh', 1],
      ['cycle', 1],
    ])
    const listed = await admin.fleetCommands({node: CH1, status: 'delivered'})
    expect(listed.commands.map((c) => c.id).sort()).toEqual(got.commands.map((c) => c.id).sort())

    // Nothing open: a short wait answers empty once it is over.
    expect((await ch1.nodeCommands(1)).commands).toEqual([])
    // A command stored while the node waits wakes it.
    const waiting = ch1.nodeCommands(25)
    const sent = await admin.sendCommand('reboot', {node: CH1})
    expect((await waiting).commands.map((c) => c.id)).toEqual([sent.commands[0]!.id])
    for (const c of [...got.commands, sent.commands[0]!]) await ch1.commandResult(c.id, {ok: true, summary: 'done'})
  })

  it('a node neither sees nor answers another node\'s commands; users and nodes keep to their own routes', async () => {
    const sent = await admin.sendCommand('refresh', {node: CH2})
    const id = sent.commands[0]!.id
    const sg = await nodeClient(SG1)
    await settle(sg)
    expect((await sg.nodeCommands(0)).commands.some((c) => c.id === id)).toBe(false)
    await expect(sg.commandResult(id, {ok: true, summary: 'not mine'})).rejects.toMatchObject({code: 'COMMAND_UNKNOWN', status: 404})
    await expect(sg.fleetCommands()).rejects.toMatchObject({code: 'FORBIDDEN', status: 403})
    await expect(admin.nodeCommands(0)).rejects.toMatchObject({code: 'FORBIDDEN', status: 403})
    expect((await admin.fleetCommand(id)).status).toBe('pending')
  })

  it('runs a command once even when it is delivered twice; a second answer is ignored', async () => {
    const ch2 = await nodeClient(CH2)
    await settle(ch2)
    await admin.sendCommand('refresh', {node: CH2})
    const node = nodes[CH2]!
    let refreshes = 0
    let sends = 0
    const io = (hq: HqClient, loseAnswer: boolean): CommandIo => ({
      refresh: async () => ({ok: true, summary: `refresh ${++refreshes}`}),
      cycle: async () => ({ok: false, summary: 'not used'}),
      reboot: async () => ({ok: false, summary: 'not used'}),
      send: async (id: string, r: CommandResult) => {
        sends++
        if (loseAnswer) throw new Error('the answer was lost on the way')
        await hq.commandResult(id, r)
      },
    })
    const o = (lose: boolean) => ({stateDir: node.stateDir, clock, log: pino({level: 'silent'}), io: io(ch2, lose)})

    const first = await ch2.nodeCommands(0)
    expect(first.commands.map((c) => [c.command, c.deliveries])).toEqual([['refresh', 1]])
    const id = first.commands[0]!.id
    // The node runs it; its answer never reaches HQ.
    expect(await executeCommands(o(true), first.commands)).toEqual([{id, command: 'refresh', ran: true, result: {ok: true, summary: 'refresh 1'}, sent: false}])
    // Not redelivered before its time is up (the node may still be running it)…
    expect((await ch2.nodeCommands(0)).commands).toEqual([])
    // …then handed out again.
    clock.advance(61_000)
    const second = await ch2.nodeCommands(0)
    expect(second.commands.map((c) => [c.id, c.deliveries])).toEqual([[id, 2]])
    expect(await executeCommands(o(false), second.commands)).toEqual([{id, command: 'refresh', ran: false, result: {ok: true, summary: 'refresh 1'}, sent: true}])
    expect(refreshes).toBe(1)
    expect(sends).toBe(2)
    const done: FleetCommand = await admin.fleetCommand(id)
    expect(done).toMatchObject({status: 'succeeded', deliveries: 2, result: {ok: true, summary: 'refresh 1'}, finished_at: expect.any(String)})
    // A retried answer for a finished command: 200, ignored.
    expect(await ch2.commandResult(id, {ok: false, summary: 'late'})).toEqual({id, status: 'succeeded', recorded: false})
    expect((await admin.fleetCommand(id)).result).toEqual({ok: true, summary: 'refresh 1'})
  })

  it('a command nobody picks up expires; its late answer is a 409', async () => {
    const sg = await nodeClient(SG1)
    await settle(sg)
    const id = (await admin.sendCommand('cycle', {node: SG1})).commands[0]!.id
    clock.advance(15 * 60_000 + 1)
    expect((await admin.fleetCommands({node: SG1, status: 'expired'})).commands.map((c) => c.id)).toContain(id)
    expect((await sg.nodeCommands(0)).commands).toEqual([])
    await expect(sg.commandResult(id, {ok: true, summary: 'too late'})).rejects.toMatchObject({code: 'COMMAND_EXPIRED', status: 409})
    expect(await admin.fleetCommand(id)).toMatchObject({status: 'expired', deliveries: 0, result: null})
  })

  it('pause/resume/stop/start change the run mode in the desired state, audited, with a refresh sent', async () => {
    const ch1 = await nodeClient(CH1)
    await settle(ch1)
    const before = await ch1.desiredState()
    expect(before.run_mode).toBe('running')

    const paused: RunModeChange = await admin.runModeAction(CH1, 'pause')
    expect(paused).toMatchObject({node_id: CH1, action: 'pause', run_mode: 'paused', previous_run_mode: 'running', changed: true})
    const cmd = await admin.fleetCommand(paused.command_id)
    expect(cmd).toMatchObject({node_id: CH1, command: 'refresh', status: 'pending'})
    expect((await auditOf('node.pause')).at(-1)).toEqual({subject: CH1, details: {from: 'running', to: 'paused', changed: true, command_id: paused.command_id}})
    const doc = await ch1.desiredState()
    expect(doc).toMatchObject({run_mode: 'paused', sequence: before.sequence + 1})
    expect((await ch1.nodeCommands(0)).commands.map((c) => c.id)).toEqual([paused.command_id])

    // Again: a no-op, and it says so.
    const again = await admin.runModeAction(CH1, 'pause')
    expect(again).toMatchObject({changed: false, message: `${CH1} is already paused; refresh sent`})
    expect((await ch1.desiredState()).sequence).toBe(doc.sequence)

    expect(await admin.runModeAction(CH1, 'resume')).toMatchObject({run_mode: 'running', previous_run_mode: 'paused', changed: true})
    expect(await admin.runModeAction(CH1, 'stop')).toMatchObject({run_mode: 'stopped', changed: true})
    expect((await ch1.desiredState()).run_mode).toBe('stopped')
    expect(await admin.fleetNode(CH1)).toMatchObject({run_mode: 'stopped', state: {desired: {run_mode: 'stopped', sequence: expect.any(Number)}, applied: null, in_sync: null}})
    expect(await admin.runModeAction(CH1, 'start')).toMatchObject({run_mode: 'running', previous_run_mode: 'stopped'})

    await expect(admin.runModeAction(PENDING, 'stop')).rejects.toMatchObject({code: 'NODE_NOT_ACTIVE', status: 409})
    await expect(admin.runModeAction('CH-NOPE-01', 'stop')).rejects.toMatchObject({code: 'NODE_UNKNOWN', status: 404})
    const viewer = await admin.request<{cert: string; key: string}>('POST', '/v1/users', {name: 'vera', role: 'viewer'}).catch(() => undefined)
    if (viewer) {
      const v = await userClient(t.hq.url, {...t.admin, cert: viewer.cert, key: viewer.key})
      try {
        await expect(v.runModeAction(CH1, 'stop')).rejects.toMatchObject({code: 'FORBIDDEN', status: 403})
      } finally {
        await v.close()
      }
    }
  })

  it('HQ closes with a long-poll in flight without waiting for it', async () => {
    const sg = await nodeClient(SG1)
    await settle(sg)
    const waiting = sg.nodeCommands(25).then(
      (r) => r.commands,
      (err: {code?: string}) => err.code,
    )
    // Stored in the database by "another replica" (not through this HQ): the 1 s DB poll finds it.
    await t.hq.db.query("INSERT INTO fleet_commands (id, node_id, command, created_by, created_at, expires_at) VALUES ('cmd_0000000000000000000a', $1, 'refresh', 'other-replica', $2, $3)", [
      SG1,
      clock.now(),
      new Date(clock.now().getTime() + 60_000),
    ])
    expect(await waiting).toEqual([expect.objectContaining({id: 'cmd_0000000000000000000a', command: 'refresh'})])
    const again = sg.nodeCommands(25).then(
      (r) => r.commands,
      (err: {code?: string}) => err.code,
    )
    await t.stop()
    // Answered (empty) or cut off: either way HQ's close did not wait 25 s for it.
    expect([[], 'HQ_CLOSED', 'HQ_UNREACHABLE']).toContainEqual(await again)
  })
})

/**
 * The whole path on a real node: a daemon in-process (no jitter) running its stack on the test
 * engine, driven from HQ by the run-mode actions; its command loop long-polls the refresh each
 * action sends, and /healthz and the containers follow.
 */
describe.runIf(process.env.JIL_TEST_IMAGE)('run-mode actions reach a running daemon', () => {
  const NODE = 'DE-FCMD-01'
  let t: Awaited<ReturnType<typeof startTestHq>>
  let node: TestNode
  let admin: HqClient
  let daemon: import('../../src/daemon/daemon.js').RunningDaemon
  let runtime: import('../../src/node/runtime.js').DockerRuntime
  const until = async <T,>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 50_000): Promise<T> => {
    const end = Date.now() + timeoutMs
    for (;;) {
      const v = await fn()
      if (v !== undefined) return v
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }
  const healthz = async () => {
    const r = await fetch(`${daemon.ready.healthz}/healthz`)
    return {status: r.status, body: (await r.json()) as {run_mode: string; reasons: {code: string}[]}}
  }
  const states = async () => (await runtime.list(NODE)).map((c) => c.state).sort()
  const answered = (id: string) => until(`command ${id} answered`, async () => {
    const c = await admin.fleetCommand(id)
    return c.status === 'succeeded' || c.status === 'failed' ? c : undefined
  })

  beforeAll(async () => {
    const {removeContainersOf, signTestImage, testBaseImage} = await import('../helpers/images.js')
    const {DockerRuntime} = await import('../../src/node/runtime.js')
    const {runDaemon} = await import('../../src/daemon/daemon.js')
    const {testSettings} = await import('../helpers/node.js')
    t = await startTestHq()
    node = await joinTestNode(t.hq, t.admin, {nodeId: NODE, zone: 'DE/BAFIN'})
    await removeContainersOf(NODE)
    const base = testBaseImage()
    await signTestImage(t.hq.url, t.admin, {image: 'jil/busybox', repository: base.repository, tag: 'test', digest: base.digest}, 'v1.0')
    admin = await userClient(t.hq.url, t.admin)
    await admin.setStack('devnet', {
      services: [
        {name: 'api', image: 'jil/busybox', command: ['sleep', '3600'], critical: true, network: 'none', stop_timeout_s: 1, grace_s: 1},
        {name: 'worker', image: 'jil/busybox', command: ['sleep', '3600'], critical: false, network: 'none', stop_timeout_s: 1, grace_s: 1},
      ],
    })
    runtime = await DockerRuntime.connect(process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST)
    daemon = await runDaemon({
      stateDir: node.stateDir,
      settings: testSettings(node.stateDir, {JIL_JITTER: '0s', JIL_DRAIN: '1s'}),
      clock: (await import('../../src/shared/clock.js')).systemClock,
      log: pino({level: 'silent'}),
      version: '0.0.0-test',
      agents: ['update'],
      healthzCacheMs: 0,
      runtime,
    })
    await until('the stack running and /healthz 200', async () => ((await states()).join() === 'running,running' && (await healthz()).status === 200 ? true : undefined))
  })
  afterAll(async () => {
    await daemon?.stop()
    const {removeContainersOf} = await import('../helpers/images.js')
    await removeContainersOf(NODE).catch(() => {})
    await admin?.close()
    await node?.cleanup()
    await t?.stop()
  })

  it('pause drains /healthz while the containers keep running; resume brings it back', async () => {
    const ids = (await runtime.list(NODE)).map((c) => c.id).sort()
    const pause = await admin.runModeAction(NODE, 'pause')
    expect(await answered(pause.command_id)).toMatchObject({status: 'succeeded', deliveries: 1, result: {ok: true, details: {run_mode: 'paused'}}})
    const h = await healthz()
    expect(h.status).toBe(503)
    expect(h.body).toMatchObject({run_mode: 'paused', reasons: [{code: 'NODE_PAUSED'}]})
    expect(await states()).toEqual(['running', 'running'])
    expect((await runtime.list(NODE)).map((c) => c.id).sort()).toEqual(ids)

    const resume = await admin.runModeAction(NODE, 'resume')
    expect(await answered(resume.command_id)).toMatchObject({status: 'succeeded', result: {ok: true, details: {run_mode: 'running'}}})
    expect((await healthz()).status).toBe(200)
  })

  it('stop fails /healthz, then stops the services after the drain; start starts them again', async () => {
    const stop = await admin.runModeAction(NODE, 'stop')
    // /healthz fails while the services still run (the drain), before they stop.
    await until('/healthz 503 stopped', async () => ((await healthz()).body.run_mode === 'stopped' ? true : undefined))
    expect(await answered(stop.command_id)).toMatchObject({status: 'succeeded', result: {ok: true, details: {run_mode: 'stopped'}}})
    expect(await states()).toEqual(['exited', 'exited'])
    expect((await healthz()).body.reasons.map((r) => r.code)).toContain('NODE_STOPPED')

    const start = await admin.runModeAction(NODE, 'start')
    expect(await answered(start.command_id)).toMatchObject({status: 'succeeded'})
    expect(await states()).toEqual(['running', 'running'])
    expect((await healthz()).status).toBe(200)
    // HQ sees desired and applied agree once the node's heartbeat says so (no health agent here: none yet).
    expect((await admin.fleetNode(NODE)).state.desired.run_mode).toBe('running')
  })

  it('cycle restarts the services one by one; reboot without a command only reports', async () => {
    const before = new Map((await runtime.list(NODE)).map((c) => [c.service, c.id]))
    const started = async () => new Map(await Promise.all([...before.values()].map(async (id) => [id, (await runtime.inspect(id)).startedAt] as const)))
    const t0 = await started()
    const cycle = (await admin.sendCommand('cycle', {node: NODE})).commands[0]!
    expect(await answered(cycle.id)).toMatchObject({status: 'succeeded', result: {ok: true, details: {restarted: ['api', 'worker']}}})
    const t1 = await started()
    for (const [id, at] of t0) expect(t1.get(id)).not.toEqual(at)
    expect(await states()).toEqual(['running', 'running'])

    const reboot = (await admin.sendCommand('reboot', {node: NODE})).commands[0]!
    expect(await answered(reboot.id)).toMatchObject({status: 'succeeded', result: {ok: true, summary: 'reboot requested; no JIL_REBOOT_COMMAND configured'}})
  })
})
