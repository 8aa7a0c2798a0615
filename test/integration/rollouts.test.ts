
import {afterAll, beforeAll, describe, expect, it} from 'vitest'


import {rollbackNode, startUpgrade} from '../../src/cli/rollouts.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import type {AgentReport, FleetNode, RolloutPlan, RolloutView} from '../../src/shared/api.js'
import {ManualClock} from '../../src/shared/clock.js'
import {approvalPayload, type ImageManifest} from '../../src/shared/manifest.js'
import {verifyDesiredState, type DesiredState} from '../../src/shared/stack.js'
import {extendTrust} from '../../src/shared/signing-keys.js'
import {signAsUser} from '../../src/shared/user-signature.js'
import {auditOnce, startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {closeSuite, connectTestNode, suiteState, testHeartbeat} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
if (!REGISTRY && process.env.CI) throw new Error('JIL_TEST_REGISTRY is not set: run `eval "$(scripts/test-services.sh env)"` first')

type Storage = {name: string; databaseUrl?: () => Promise<{url: string; drop: () => Promise<void>}>}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg', databaseUrl: freshPgDatabase}] : [])]

/**
 * Rollouts at HQ, in-process with an injected clock: the nodes are real identities over mutual TLS
 * whose heartbeats and update reports are written by the test (the node side of an upgrade, a real
 * daemon on a real engine, is test/system/rollouts.test.ts). The driver is ticked by hand.
 */
describe.runIf(REGISTRY).each(storages)('rollouts and rollbacks on $name', (storage) => {
  const clock = new ManualClock(new Date())
  const API = `jil/ro-api-${storage.name}`
  const suffix = storage.name === 'pg' ? 'PG' : 'LT'
  const ids = [`JP-RO${suffix}-01`, `JP-RO${suffix}-02`, `JP-RO${suffix}-03`]
  const devnetId = `JP-RO${suffix}-09`
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pg: {url: string; drop: () => Promise<void>} | undefined
  const {users, nodes, digest, as} = suiteState()
  const image = (v: string) => `${API}@${digest[v]}`
  const tick = () => t.hq.rollouts.tick()

  function heartbeat(id: string, d: string, health = 'healthy'): Promise<unknown> {
    const hb = testHeartbeat(id, clock.now(), {
      services: [{name: 'api', critical: true, state: 'running', health: health as 'healthy', digest: d, version: null}],
      containers: {healthy: health === 'healthy' ? 1 : 0, unhealthy: health === 'unhealthy' ? 1 : 0},
      certValidMs: 86_400_000,
    })
    return nodes[id]!.client.heartbeat(hb)
  }

  /** A heartbeat now and another min-healthy later: what a node healthy on `d` sends. */
  async function healthyOn(id: string, d: string, minHealthyS: number): Promise<void> {
    await heartbeat(id, d)
    await tick()
    clock.advance(minHealthyS * 1000)
    await heartbeat(id, d)
    await tick()
  }

  const rollout = (id: string) => as('vera').rollout(id)
  const desired = (id: string) => nodes[id]!.client.desiredState()
  const status = async (id: string) => (await as('vera').fleetNodes({zone: 'JP/JFSA'})).nodes.find((n: FleetNode) => n.id === id)!.status
  /** The audit entries of a subject once `last` is among them (the sequencer places entries a moment after their commit). */
  const audit = (subject: string, last: string) => auditOnce(as('admin'), subject, last)

  beforeAll(async () => {
    pg = storage.databaseUrl ? await storage.databaseUrl() : undefined
    t = await startTestHq({clock, registry: REGISTRY, rolloutTickMs: 2_000_000_000, ...(pg ? {databaseUrl: pg.url} : {})})
    tmp = await tempDir()
    Object.assign(users, await testUsers(t, tmp.dir, [['ci', 'ci-pipeline'], ['olga', 'ops-lead'], ['otto', 'ops-lead'], ['vera', 'viewer']] as const))
    for (const v of ['v1.0', 'v1.1', 'v1.2', 'v1.3']) {
      digest[v] = await pushTinyImage(API, v)
      const m = await as('ci').request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/${API}:${v}`, version: v, commit: 'abcdef0'})
      // v1.3 stays on devnet.
      if (v === 'v1.3') continue
      await as('olga').request('POST', `/v1/images/${m.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(m, 'testnet'), users.olga!.bundle)})
      await as('otto').request('POST', `/v1/images/${m.digest}/promote`, {to: 'testnet'})
    }
    const spec = {services: [{name: 'api', image: API, critical: true, command: ['sleep', '3600']}]}
    await as('olga').setStack('testnet', spec)
    await as('olga').setStack('devnet', spec)
    await as('olga').pinStack('testnet', {service: 'api', version: 'v1.0'})
    for (const [id, track] of [...ids.map((i) => [i, 'testnet'] as const), [devnetId, 'devnet'] as const]) {
      nodes[id] = await connectTestNode(t.hq, t.admin, {nodeId: id, zone: 'JP/JFSA', track, clock})
    }
    for (const id of ids) await heartbeat(id, digest['v1.0']!)
  })
  afterAll(() => closeSuite({nodes, users, hq: t, pg, tmp}))

  it('refuses what is not an upgrade, naming why, and stores nothing', async () => {
    const up = (who: string, target: {node: string} | {zone: string}, body: Record<string, unknown>) => as(who).upgrade(target, {image: image('v1.1'), ...body})
    await expect(up('vera', {zone: 'JP/JFSA'}, {})).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    await expect(up('ci', {zone: 'JP/JFSA'}, {})).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    await expect(up('olga', {node: devnetId}, {})).rejects.toMatchObject({status: 409, code: 'ROLLOUT_DEVNET'})
    await expect(up('olga', {zone: 'KR/FSC'}, {})).rejects.toMatchObject({status: 404, code: 'NO_NODES'})
    await expect(up('olga', {node: 'JP-NOPE-01'}, {})).rejects.toMatchObject({status: 404, code: 'NODE_UNKNOWN'})
    await expect(as('olga').upgrade({zone: 'JP/JFSA'}, {image: image('v1.3')})).rejects.toMatchObject({status: 409, code: 'NOT_ON_TRACK'})
    await expect(as('olga').upgrade({zone: 'JP/JFSA'}, {image: `${API}@sha256:${'0'.repeat(64)}`})).rejects.toMatchObject({status: 404, code: 'NOT_SIGNED'})
    await expect(as('olga').upgrade({zone: 'JP/JFSA'}, {image: `jil/other@${digest['v1.1']}`})).rejects.toMatchObject({status: 404, code: 'NOT_SIGNED'})
    await expect(up('olga', {zone: 'JP/JFSA'}, {min_healthy_s: 60, health_timeout_s: 60})).rejects.toMatchObject({status: 400, code: 'ROLLOUT_INVALID'})
    await expect(up('olga', {zone: 'JP/JFSA'}, {max_parallel: '2'})).rejects.toMatchObject({status: 400, details: {field: 'max_parallel'}})
    await expect(as('olga').upgrade({zone: 'JP/JFSA'}, {image: 'not-an-image'})).rejects.toMatchObject({status: 400, details: {field: 'image'}})
    // Auto-revert without the caller's signed rollbacks: refused.
    await expect(up('olga', {zone: 'JP/JFSA'}, {auto_revert: true})).rejects.toMatchObject({status: 409, code: 'ROLLBACK_SIGNATURE_REQUIRED'})
    // Malformed revert signatures: the caller's error (a 4xx with its code), never a 500.
    for (const bad of [null, 42, 'sig', [], {}, {alg: 'RS256'}, {alg: 'ES256', signature: 'x', payload: {}, cert: 'c'}, {alg: 'ES256', signature: 'A'.repeat(86) + '==', payload: {}, cert: 'not a cert'}]) {
      await expect(up('olga', {zone: 'JP/JFSA'}, {auto_revert: true, revert_signatures: [bad]}), JSON.stringify(bad)).rejects.toMatchObject({status: expect.toSatisfy((n: number) => n >= 400 && n < 500), code: expect.any(String)})
    }
    expect((await as('vera').rollouts()).rollouts).toEqual([])

    // A dry run plans and stores nothing: devnet nodes are left out, auto-revert's rollbacks are listed.
    const plan = (await up('olga', {zone: 'JP/JFSA'}, {dry_run: true, auto_revert: true})) as RolloutPlan
    expect(plan).toMatchObject({image: API, digest: digest['v1.1'], version: 'v1.1', skipped: [{node_id: devnetId, reason: 'devnet follows its newest signed manifest'}]})
    expect(plan.nodes.map((n) => n.node_id)).toEqual(ids)
    expect(plan.nodes[0]!.services).toEqual([{service: 'api', from: {version: 'v1.0', digest: digest['v1.0']}}])
    expect(plan.revert_payloads).toEqual([{purpose: 'rollback', track: 'testnet', service: 'api', image: API, digest: digest['v1.0'], version: 'v1.0'}])
    expect((await as('vera').rollouts()).rollouts).toEqual([])

    // A stopped node runs nothing, so it could never count as healthy: refused alone, left out of a zone.
    await as('olga').runModeAction(ids[2]!, 'stop')
    await expect(up('olga', {node: ids[2]!}, {})).rejects.toMatchObject({status: 409, code: 'NODE_STOPPED'})
    const without = (await up('olga', {zone: 'JP/JFSA'}, {dry_run: true})) as RolloutPlan
    expect(without.nodes.map((n) => n.node_id)).toEqual(ids.slice(0, 2))
    expect(without.skipped).toContainEqual({node_id: ids[2], reason: 'stopped: its services do not run (jil fleet start)'})
    await as('olga').runModeAction(ids[2]!, 'start')
  })

  it('moves one node at a time, each done only when healthy on the new digest for min-healthy; the node shows upgrading', async () => {
    const r = (await as('olga').upgrade({zone: 'JP/JFSA'}, {image: image('v1.1'), min_healthy_s: 10, health_timeout_s: 120})) as RolloutView
    expect(r).toMatchObject({state: 'running', version: 'v1.1', max_parallel: 1, created_by: 'olga', target: {zone: 'JP/JFSA'}})
    await tick()
    let v = await rollout(r.id)
    expect(v.nodes.map((n) => n.state)).toEqual(['upgrading', 'pending', 'pending'])
    expect(await status(ids[0]!)).toBe('upgrading')
    // The first node's desired state now pins v1.1; the others still run v1.0. A refresh went to it.
    expect((await desired(ids[0]!)).services[0]).toMatchObject({name: 'api', version: 'v1.1', digest: digest['v1.1']})
    expect((await desired(ids[1]!)).services[0]).toMatchObject({version: 'v1.0'})
    expect((await as('vera').fleetCommands({node: ids[0]!})).commands[0]).toMatchObject({command: 'refresh', created_by: `rollout:${r.id}`})
    // A second rollout over these nodes is refused while this one is open.
    await expect(as('olga').upgrade({node: ids[2]!}, {image: image('v1.2')})).rejects.toMatchObject({status: 409, code: 'ROLLOUT_CONFLICT'})

    // Still on the old digest: nothing moves, however many ticks.
    await heartbeat(ids[0]!, digest['v1.0']!)
    await tick()
    expect((await rollout(r.id)).nodes[0]!.state).toBe('upgrading')
    await healthyOn(ids[0]!, digest['v1.1']!, 10)
    v = await rollout(r.id)
    expect(v.nodes.map((n) => n.state)).toEqual(['done', 'upgrading', 'pending'])
    await healthyOn(ids[1]!, digest['v1.1']!, 10)
    await healthyOn(ids[2]!, digest['v1.1']!, 10)
    v = await rollout(r.id)
    expect(v).toMatchObject({state: 'succeeded', counts: {done: 3}})
    expect(await status(ids[0]!)).toBe('active')
    const actions = (await audit(r.id, 'rollout.succeeded')).map((e) => e.action)
    expect(actions[0]).toBe('rollout.start')
    expect(actions.at(-1)).toBe('rollout.succeeded')
    expect(actions.filter((a) => a === 'rollout.progress').length).toBeGreaterThanOrEqual(3)
  })

  it('a failed update halts the rollout; auto-revert pins every touched node back with the user\'s signed rollback, which the node accepts', async () => {
    const r = (await startUpgrade(as('olga'), users.olga!.bundle, {zone: 'JP/JFSA'}, {image: image('v1.2'), min_healthy_s: 5, health_timeout_s: 120, auto_revert: true})) as RolloutView
    expect(r.auto_revert).toBe(true)
    await tick()
    await healthyOn(ids[0]!, digest['v1.2']!, 5)
    expect((await rollout(r.id)).nodes.map((n) => n.state)).toEqual(['done', 'upgrading', 'pending'])
    // The second node's update agent reports that v1.2 never got healthy (it restored v1.1 itself).
    const report: AgentReport = {
      agent: 'update',
      node_id: ids[1]!,
      started_at: clock.now().toISOString(),
      finished_at: clock.now().toISOString(),
      ok: true,
      summary: '1 failed',
      findings: [],
      details: {actions: [{service: 'api', action: 'replace', from: {version: 'v1.1', digest: digest['v1.1']}, to: {version: 'v1.2', digest: digest['v1.2']}, outcome: 'failed', error: {code: 'HEALTH_TIMEOUT', message: 'api did not get healthy'}}]},
    }
    await nodes[ids[1]!]!.client.report(report)
    await tick()
    let v = await rollout(r.id)
    expect(v.state).toBe('reverting')
    expect(v.reason).toContain(`${ids[1]}: api failed on the node: HEALTH_TIMEOUT`)
    expect(v.nodes.map((n) => n.state)).toEqual(['reverting', 'reverting', 'skipped'])

    // The first node runs v1.2 now: its desired state goes back to v1.1 with olga's rollback, and the node's own check accepts it.
    const doc: DesiredState = await desired(ids[0]!)
    expect(doc.services[0]).toMatchObject({version: 'v1.1', digest: digest['v1.1'], rollback: {payload: {purpose: 'rollback', version: 'v1.1', digest: digest['v1.1']}}})
    const identity = await loadNodeIdentity(nodes[ids[0]!]!.node.stateDir)
    const {keys} = await nodes[ids[0]!]!.client.signingKeys()
    const verdict = verifyDesiredState(doc, {
      keys: extendTrust(keys.slice(0, 1), keys),
      nodeId: ids[0]!,
      track: 'testnet',
      zone: 'JP/JFSA',
      now: clock.now(),
      lastSequence: 0,
      running: new Map([['api', 'v1.2']]),
      caPem: identity.caPem,
      isRevoked: () => false,
    })
    expect(verdict).toEqual({ok: true, refused: []})

    await healthyOn(ids[0]!, digest['v1.1']!, 5)
    await healthyOn(ids[1]!, digest['v1.1']!, 5)
    v = await rollout(r.id)
    expect(v).toMatchObject({state: 'reverted', counts: {reverted: 2, skipped: 1}})
    expect((await desired(ids[2]!)).services[0]).toMatchObject({version: 'v1.1'})
  })

  it('a canary pauses after its nodes; pause, resume and abort are audited and refused in the wrong state', async () => {
    const r = (await as('olga').upgrade({zone: 'JP/JFSA'}, {image: image('v1.2'), min_healthy_s: 1, health_timeout_s: 60, canary: 1, max_parallel: 3})) as RolloutView
    await tick()
    expect((await rollout(r.id)).nodes.map((n) => n.state)).toEqual(['upgrading', 'pending', 'pending'])
    await healthyOn(ids[0]!, digest['v1.2']!, 1)
    await tick()
    let v = await rollout(r.id)
    expect(v.state).toBe('paused')
    expect(v.nodes.map((n) => n.state)).toEqual(['done', 'pending', 'pending'])
    clock.advance(600_000)
    await tick()
    expect((await rollout(r.id)).state).toBe('paused')
    await expect(as('olga').rolloutAction(r.id, 'pause')).rejects.toMatchObject({status: 409, code: 'ROLLOUT_STATE'})
    await expect(as('vera').rolloutAction(r.id, 'resume')).rejects.toMatchObject({status: 403})
    v = await as('olga').rolloutAction(r.id, 'resume')
    expect(v.state).toBe('running')
    await tick()
    // Past the canary, max-parallel 3: both remaining nodes move together.
    expect((await rollout(r.id)).nodes.map((n) => n.state)).toEqual(['done', 'upgrading', 'upgrading'])
    v = await as('otto').rolloutAction(r.id, 'abort')
    expect(v).toMatchObject({state: 'aborted', reason: 'aborted by otto'})
    expect(v.nodes.map((n) => n.state)).toEqual(['done', 'halted', 'halted'])
    await expect(as('olga').rolloutAction(r.id, 'resume')).rejects.toMatchObject({code: 'ROLLOUT_STATE'})
    const actions = (await audit(r.id, 'rollout.abort')).map((e) => e.action)
    expect(actions).toEqual(expect.arrayContaining(['rollout.start', 'rollout.paused', 'rollout.resume', 'rollout.abort']))
    await expect(as('olga').rollout('ro_00000000000000000000')).rejects.toMatchObject({status: 404, code: 'ROLLOUT_UNKNOWN'})
  })

  it('rolls one node back to its previous signed version with the caller\'s own signature', async () => {
    // The first node runs v1.2 (the aborted rollout's canary); its previous was v1.1.
    await expect(as('olga').rollbackNode(ids[0]!, {})).rejects.toMatchObject({status: 409, code: 'ROLLBACK_SIGNATURE_REQUIRED'})
    await expect(as('vera').rollbackNode(ids[0]!, {dry_run: true})).rejects.toMatchObject({status: 403})
    await expect(as('olga').rollbackNode(devnetId, {dry_run: true})).rejects.toMatchObject({code: 'ROLLOUT_DEVNET'})
    await expect(as('olga').rollbackNode(ids[0]!, {service: 'nope', dry_run: true})).rejects.toMatchObject({status: 404, code: 'SERVICE_UNKNOWN'})
    // Another user's signature is not the caller's consent.
    const plan = await as('olga').rollbackNode(ids[0]!, {dry_run: true})
    expect(plan).toMatchObject({applied: false, services: [{service: 'api', from: {version: 'v1.2'}, to: {version: 'v1.1', digest: digest['v1.1']}}]})
    const otto = signAsUser(plan.payloads[0] as {purpose: string}, users.otto!.bundle)
    await expect(as('olga').rollbackNode(ids[0]!, {signatures: [otto]})).rejects.toMatchObject({status: 403, code: 'ROLLBACK_NOT_YOURS'})
    // Malformed signatures: the caller's error (a 4xx with its code), never a 500.
    for (const bad of [null, 42, 'sig', [], {}, {...otto, alg: 'RS256'}, {...otto, signature: 'x'}, {...otto, payload: []}, {...otto, cert: 7}, {...otto, cert: 'not a cert'}]) {
      await expect(as('olga').rollbackNode(ids[0]!, {signatures: [bad]}), JSON.stringify(bad)).rejects.toMatchObject({status: expect.toSatisfy((n: number) => n >= 400 && n < 500), code: expect.any(String)})
    }
    expect((await desired(ids[0]!)).services[0]).toMatchObject({version: 'v1.2'})

    const done = await rollbackNode(as('olga'), users.olga!.bundle, ids[0]!, {dryRun: false})
    expect(done).toMatchObject({applied: true, command_id: expect.stringMatching(/^cmd_/)})
    expect((await desired(ids[0]!)).services[0]).toMatchObject({version: 'v1.1', rollback: {payload: {version: 'v1.1'}}})
    expect((await audit(ids[0]!, 'node.rollback')).map((e) => e.action)).toContain('node.rollback')
    // v1.0 is below v1.1 on testnet too: a second rollback goes there; then nothing is lower.
    await rollbackNode(as('olga'), users.olga!.bundle, ids[0]!, {dryRun: false})
    expect((await desired(ids[0]!)).services[0]).toMatchObject({version: 'v1.0'})
    await expect(rollbackNode(as('olga'), users.olga!.bundle, ids[0]!, {dryRun: true})).rejects.toMatchObject({status: 409, code: 'NOTHING_TO_ROLL_BACK'})
  })
})
