import {existsSync} from 'node:fs'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {AlertEvaluator, type AlertSink} from '../../src/hq/alerts/evaluator.js'
import {runningKey, type TrackResolver} from '../../src/hq/alerts/snapshot.js'
import type {HqInitResult} from '../../src/hq/init.js'
import type {RunningHq} from '../../src/hq/server.js'
import {renewNode} from '../../src/node/identity.js'
import type {AlertView, SilenceView} from '../../src/shared/alerts.js'
import type {AgentReport, HeartbeatService} from '../../src/shared/api.js'
import type {AuditEntry} from '../../src/shared/audit.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {ManualClock} from '../../src/shared/clock.js'
import {openPg} from '../../src/shared/db/pg.js'
import type {Db, Queryable} from '../../src/shared/db/types.js'
import type {ImageManifest} from '../../src/shared/manifest.js'
import {dbAdapters} from '../helpers/adapters.js'
import {BIN, jil} from '../helpers/cli.js'
import {auditOnce, startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {closeSuite, connectTestNode, suiteState, testHeartbeat} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
if (!REGISTRY && process.env.CI) throw new Error('JIL_TEST_REGISTRY is not set: run `eval "$(scripts/test-services.sh env)"` first')

type Storage = {name: string; databaseUrl?: () => Promise<{url: string; drop: () => Promise<void>}>}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg', databaseUrl: freshPgDatabase}] : [])]

const MIN = 60_000
const DAY = 86_400_000
const ROGUE = `sha256:${'f'.repeat(64)}`

/** A sink that keeps what the evaluator would have notified (the seam webhooks plug into). */
function collectingSink(): AlertSink & {events: {kind: 'opened' | 'resolved'; alert: AlertView}[]; of: (fingerprint: string) => string[]} {
  const events: {kind: 'opened' | 'resolved'; alert: AlertView}[] = []
  return {
    events,
    of: (fp) => events.filter((e) => e.alert.fingerprint === fp).map((e) => e.kind),
    async opened(_tx: Queryable, alert: AlertView) {
      events.push({kind: 'opened', alert})
    },
    async resolved(_tx: Queryable, alert: AlertView) {
      events.push({kind: 'resolved', alert})
    },
  }
}

/**
 * The alert engine in an in-process HQ with an injected clock: real node identities post heartbeats
 * and reports over mutual TLS, the test moves the clock and ticks the evaluator by hand (its timer
 * never fires), and observes notifications through the sink seam.
 */
describe.runIf(REGISTRY).each(storages)('the alert engine on $name', (storage) => {
  const clock = new ManualClock(new Date())
  const sink = collectingSink()
  const API = `jil/al-api-${storage.name}`
  const suffix = storage.name === 'pg' ? 'PG' : 'LT'
  const [A, B, C] = [`CH-AL${suffix}-01`, `CH-AL${suffix}-02`, `CH-AL${suffix}-03`]
  let t: Awaited<ReturnType<typeof startTestHq>>
  let hq: RunningHq
  let init: HqInitResult
  let admin: UserBundle
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pg: {url: string; drop: () => Promise<void>} | undefined
  const {users, nodes, digest, as} = suiteState()
  const tick = () => hq.alerts.tick()
  const open = async () => (await as('vera').alerts()).alerts
  const openFingerprints = async () => (await open()).map((a) => a.fingerprint).sort()
  const byFingerprint = async (fp: string, state?: AlertView['state']) => (await as('vera').alerts(state ? {state} : {})).alerts.find((a) => a.fingerprint === fp)

  type Health = {digest?: string; disk?: number; lag?: number; state?: string; health?: HeartbeatService['health']}
  function heartbeat(id: string, o: Health = {}): Promise<unknown> {
    const hb = testHeartbeat(id, clock.now(), {
      services: [{name: 'api', critical: true, state: o.state ?? 'running', health: o.health ?? 'healthy', digest: o.digest ?? digest.v1!, version: null}],
      diskPercent: o.disk,
      certValidMs: 20 * DAY,
      sync: {lag_s: o.lag ?? 0, caught_up: (o.lag ?? 0) === 0},
    })
    return nodes[id]!.client.heartbeat(hb)
  }
  /** Every node heard from now, healthy on `d` unless told otherwise. */
  async function heartbeats(o: Partial<Record<string, Health>> = {}, d = digest.v1!): Promise<void> {
    for (const id of [A, B, C]) await heartbeat(id, {digest: d, ...o[id]})
  }
  /** The audit entries of a subject once `action` is among them (the sequencer places entries a moment after their commit). */
  const audit = (subject: string, action: string): Promise<AuditEntry[]> => auditOnce(as('admin'), subject, action)
  async function sign(version: string): Promise<string> {
    const d = await pushTinyImage(API, version)
    await as('ci').request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/${API}:${version}`, version, commit: 'abcdef0'})
    return d
  }

  beforeAll(async () => {
    pg = storage.databaseUrl ? await storage.databaseUrl() : undefined
    tmp = await tempDir()
    // Neither loop's timer fires during the test: the evaluator is ticked by hand.
    t = await startTestHq({clock, registry: REGISTRY, rolloutTickMs: 2_000_000_000, alertEveryMs: 2_000_000_000, alerts: {sink}, ...(pg ? {databaseUrl: pg.url} : {})})
    ;({hq, init, admin} = t)
    Object.assign(users, await testUsers({hq, admin}, tmp.dir, [['ci', 'ci-pipeline'], ['olga', 'ops-lead'], ['vera', 'viewer']] as const))
    digest.v1 = await sign('v1.0')
    await as('olga').setStack('devnet', {services: [{name: 'api', image: API, critical: true, command: ['sleep', '3600']}]})
    for (const id of [A, B, C]) nodes[id] = await connectTestNode(hq, admin, {nodeId: id, zone: 'CH/FINMA', track: 'devnet', clock})
  })
  afterAll(() => closeSuite({nodes, users, hq: t, pg, tmp}))

  it('a healthy fleet raises nothing', async () => {
    await heartbeats()
    // Nodes running exactly their desired state within every threshold are not even loaded.
    expect(await tick()).toMatchObject({evaluated: true, candidates: 0, findings: 0, opened: 0})
    expect(await open()).toEqual([])
    expect(sink.events).toEqual([])
  })

  it('heartbeat-stale: fires after 5 minutes of silence, one open alert across ticks, resolves with the next heartbeat', async () => {
    clock.advance(6 * MIN)
    await heartbeat(A)
    await heartbeat(B)
    expect(await tick()).toMatchObject({evaluated: true, opened: 1})
    const first = (await open())[0]!
    expect(first).toMatchObject({fingerprint: `heartbeat-stale:${C}`, rule: 'heartbeat-stale', subject: C, node_id: C, severity: 'critical', state: 'open', silenced: false})
    // It began when the node went silent for 5 minutes, not when HQ noticed.
    expect(Date.parse(first.first_seen)).toBeLessThan(clock.now().getTime())

    clock.advance(MIN)
    await heartbeat(A)
    await heartbeat(B)
    expect(await tick()).toMatchObject({opened: 0, updated: 1})
    const again = await open()
    expect(again).toHaveLength(1)
    expect(again[0]).toMatchObject({id: first.id, first_seen: first.first_seen, last_seen: clock.now().toISOString()})
    expect(sink.of(`heartbeat-stale:${C}`)).toEqual(['opened'])

    await heartbeat(C)
    expect(await tick()).toMatchObject({resolved: 1})
    expect(await open()).toEqual([])
    expect(await byFingerprint(`heartbeat-stale:${C}`, 'resolved')).toMatchObject({id: first.id, state: 'resolved', resolved_at: clock.now().toISOString()})
    expect(sink.of(`heartbeat-stale:${C}`)).toEqual(['opened', 'resolved'])
  })

  it('disk-critical, service-down, sync-lag and image-unsigned fire from heartbeats and resolve when the node is well again', async () => {
    clock.advance(MIN)
    await heartbeats({[A]: {disk: 95}, [B]: {state: 'exited'}, [C]: {lag: 900, digest: ROGUE}})
    expect(await tick()).toMatchObject({opened: 4})
    expect(await openFingerprints()).toEqual([`disk-critical:${A}`, `image-unsigned:${C}`, `service-down:${B}`, `sync-lag:${C}`].sort())
    expect(await byFingerprint(`sync-lag:${C}`)).toMatchObject({severity: 'critical', details: {lag_s: 900}})
    expect(await byFingerprint(`image-unsigned:${C}`)).toMatchObject({details: {track: 'devnet', services: [{service: 'api', digest: ROGUE}]}})
    // The lag shrinks: the same alert, now a warning.
    clock.advance(MIN)
    await heartbeats({[A]: {disk: 95}, [B]: {state: 'exited'}, [C]: {lag: 120, digest: ROGUE}})
    await tick()
    expect(await byFingerprint(`sync-lag:${C}`)).toMatchObject({severity: 'warning', details: {lag_s: 120}})

    clock.advance(MIN)
    await heartbeats()
    expect(await tick()).toMatchObject({resolved: 4})
    expect(await open()).toEqual([])
    for (const fp of [`disk-critical:${A}`, `service-down:${B}`, `sync-lag:${C}`, `image-unsigned:${C}`]) expect(sink.of(fp)).toEqual(['opened', 'resolved'])
  })

  it('version-drift: a node still on the old digest longer than the grace period after the desired one changed', async () => {
    clock.advance(MIN)
    digest.v2 = await sign('v1.1') // devnet now desires v1.1
    clock.advance(MIN)
    await heartbeats()
    expect(await tick()).toMatchObject({findings: 0}) // within the 15-minute grace
    clock.advance(15 * MIN)
    await heartbeats({[A]: {digest: digest.v2}})
    expect(await tick()).toMatchObject({candidates: 2})
    expect(await openFingerprints()).toEqual([`version-drift:${B}`, `version-drift:${C}`])
    expect(await byFingerprint(`version-drift:${B}`)).toMatchObject({severity: 'warning', details: {services: [{service: 'api', digest: digest.v1, desired: digest.v2, desired_version: 'v1.1'}]}})
    await heartbeats({}, digest.v2)
    expect(await tick()).toMatchObject({resolved: 2})
    expect(await open()).toEqual([])
  })

  it('security-critical: from the security agent\'s latest report', async () => {
    const report = (critical: boolean): AgentReport => ({
      agent: 'security',
      node_id: B,
      started_at: clock.now().toISOString(),
      finished_at: clock.now().toISOString(),
      ok: true,
      summary: critical ? '1 critical' : 'clean',
      findings: critical ? [{id: 'ssh-permit-root-login', severity: 'critical', title: 'sshd permits root login', evidence: 'PermitRootLogin yes', remediation: 'set PermitRootLogin no'}] : [{id: 'port-open:8080', severity: 'warning', title: 'port 8080 open', evidence: '', remediation: ''}],
      details: {},
    })
    await nodes[B]!.client.report(report(true))
    await heartbeats({}, digest.v2)
    await tick()
    expect(await openFingerprints()).toEqual([`security-critical:${B}`])
    expect(await byFingerprint(`security-critical:${B}`)).toMatchObject({details: {findings: [{id: 'ssh-permit-root-login', title: 'sshd permits root login'}]}})
    await nodes[B]!.client.report(report(false))
    await tick()
    expect(await open()).toEqual([])
  })

  it('rollout-failed: from the rollouts table, since it ended, until a later rollout over the same target succeeds', async () => {
    // Rows as the rollout driver leaves them (a real failing rollout is rollouts.test.ts's business).
    const insert = (id: string, state: string, finished: Date) =>
      hq.db.query(
        `INSERT INTO rollouts (id, target, image, repository, digest, version, max_parallel, min_healthy_ms, health_timeout_ms, auto_revert, canary, state, reason, created_by, created_at, updated_at, finished_at)
         VALUES ($1, '{"zone": "CH/FINMA"}', $2, $3, $4, 'v1.1', 1, 0, 60000, false, 0, $5, $6, 'olga', $7, $7, $7)`,
        [id, API, `${REGISTRY}/${API}`, digest.v2, state, state === 'failed' ? `node ${A} unhealthy on v1.1` : null, finished],
      )
    const failedAt = new Date(clock.now().getTime() - 10 * MIN)
    await insert(`ro_${'a'.repeat(18)}${suffix.toLowerCase()}`, 'failed', failedAt)
    await heartbeats({}, digest.v2)
    await tick()
    const failed = await open()
    expect(failed).toHaveLength(1)
    expect(failed[0]).toMatchObject({rule: 'rollout-failed', subject: `ro_${'a'.repeat(18)}${suffix.toLowerCase()}`, node_id: null, severity: 'critical', first_seen: failedAt.toISOString()})
    expect(failed[0]!.summary).toContain(`failed: node ${A} unhealthy on v1.1`)
    clock.advance(MIN)
    await insert(`ro_${'b'.repeat(18)}${suffix.toLowerCase()}`, 'succeeded', clock.now())
    await tick()
    expect(await open()).toEqual([])
  })

  it('ack: ops-lead acks (audited), a viewer may not; unknown and malformed ids are refused; a resolved alert cannot be acked', async () => {
    await heartbeats({[A]: {disk: 97}}, digest.v2)
    await tick()
    const alert = (await open())[0]!
    expect(alert.fingerprint).toBe(`disk-critical:${A}`)
    await expect(as('vera').ackAlert(alert.id)).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    await expect(as('ci').ackAlert(alert.id)).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    await expect(as('olga').ackAlert(`al_${'0'.repeat(20)}`)).rejects.toMatchObject({status: 404, code: 'ALERT_UNKNOWN'})
    await expect(as('olga').ackAlert('al_nope')).rejects.toMatchObject({status: 400, code: 'INVALID_PARAMS'})
    const acked = await as('olga').ackAlert(alert.id)
    expect(acked).toMatchObject({id: alert.id, state: 'acked', acked_by: 'olga', acked_at: clock.now().toISOString()})
    expect(await as('olga').ackAlert(alert.id)).toEqual(acked) // again: nothing changes
    const entries = await audit(alert.id, 'alert.ack')
    expect(entries.filter((e) => e.action === 'alert.ack')).toHaveLength(1)
    expect(entries[0]).toMatchObject({action: 'alert.ack', actor: {type: 'user', id: 'olga', role: 'ops-lead'}, details: {fingerprint: `disk-critical:${A}`, rule: 'disk-critical'}})

    // Still true: it stays acked (and stays the one alert); cleared: resolved, and no longer ackable.
    clock.advance(MIN)
    await heartbeats({[A]: {disk: 97}}, digest.v2)
    await tick()
    expect(await open()).toEqual([expect.objectContaining({id: alert.id, state: 'acked', last_seen: clock.now().toISOString()})])
    await heartbeats({}, digest.v2)
    await tick()
    expect(await open()).toEqual([])
    await expect(as('olga').ackAlert(alert.id)).rejects.toMatchObject({status: 409, code: 'ALERT_RESOLVED'})
    expect(sink.of(`disk-critical:${A}`).slice(-2)).toEqual(['opened', 'resolved'])
  })

  it('a silenced alert is stored but not notified; when the silence expires and it is still true, it notifies', async () => {
    await expect(as('olga').silenceAlerts({rule: 'disk-full', node_id: A, for_s: 3600, reason: 'x'})).rejects.toMatchObject({status: 400, code: 'RULE_UNKNOWN'})
    await expect(as('olga').silenceAlerts({rule: 'disk-critical', node_id: 'CH-NOPE-01', for_s: 3600, reason: 'x'})).rejects.toMatchObject({status: 404, code: 'NODE_UNKNOWN'})
    await expect(as('olga').silenceAlerts({rule: 'disk-critical', node_id: A, for_s: 10, reason: 'x'})).rejects.toMatchObject({status: 400, code: 'SILENCE_DURATION_INVALID'})
    await expect(as('olga').silenceAlerts({rule: 'disk-critical', node_id: A, for_s: 3600, reason: ''})).rejects.toMatchObject({status: 400, details: {field: 'reason'}})
    await expect(as('vera').silenceAlerts({rule: 'disk-critical', node_id: A, for_s: 3600, reason: 'x'})).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})

    const silence = await as('olga').silenceAlerts({rule: 'disk-critical', node_id: A, for_s: 3600, reason: 'disk swap tonight'})
    expect(silence).toMatchObject({rule: 'disk-critical', node_id: A, reason: 'disk swap tonight', created_by: 'olga', active: true, expires_at: new Date(clock.now().getTime() + 3_600_000).toISOString()})
    expect((await audit(silence.id, 'alert.silence'))[0]).toMatchObject({action: 'alert.silence', details: {rule: 'disk-critical', node_id: A}})
    const before = sink.events.length

    // Silenced on A only: B's disk alert notifies as usual.
    await heartbeats({[A]: {disk: 96}, [B]: {disk: 96}}, digest.v2)
    await tick()
    const silenced = await byFingerprint(`disk-critical:${A}`)
    expect(silenced).toMatchObject({state: 'open', silenced: true})
    expect(sink.events.slice(before).map((e) => [e.kind, e.alert.fingerprint])).toEqual([['opened', `disk-critical:${B}`]])
    clock.advance(30 * MIN)
    await heartbeats({[A]: {disk: 96}}, digest.v2)
    await tick()
    expect(sink.events.slice(before).filter((e) => e.alert.fingerprint === `disk-critical:${A}`)).toEqual([])

    // The silence expires, the disk is still full: notified now, once.
    clock.advance(31 * MIN)
    await heartbeats({[A]: {disk: 96}}, digest.v2)
    expect((await as('vera').alertSilences()).silences.map((s) => s.id)).not.toContain(silence.id)
    expect((await as('vera').alertSilences({all: true})).silences.find((s) => s.id === silence.id)).toMatchObject({active: false})
    // The first evaluation after it ran out records the silence's end in the ledger, once.
    expect(await tick()).toMatchObject({silencesEnded: 1})
    expect((await audit(silence.id, 'alert.silence.expired')).map((e) => [e.action, e.actor])).toEqual([
      ['alert.silence', {type: 'user', id: 'olga', role: 'ops-lead'}],
      ['alert.silence.expired', {type: 'hq', id: 'alerts'}],
    ])
    expect(await byFingerprint(`disk-critical:${A}`)).toMatchObject({id: silenced!.id, silenced: false})
    const notified = sink.events.slice(before).filter((e) => e.alert.fingerprint === `disk-critical:${A}`)
    expect(notified.map((e) => [e.kind, e.alert.id])).toEqual([['opened', silenced!.id]])
    expect(await tick()).toMatchObject({silencesEnded: 0})
    expect(sink.events.slice(before).filter((e) => e.alert.fingerprint === `disk-critical:${A}`)).toHaveLength(1)

    // Silenced from start to end: nothing is sent, neither opening nor resolution.
    const fleetWide = await as('olga').silenceAlerts({rule: 'service-down', for_s: 3600, reason: 'maintenance'})
    await heartbeats({[C]: {state: 'exited'}}, digest.v2)
    await tick()
    expect(await byFingerprint(`service-down:${C}`)).toMatchObject({silenced: true})
    await heartbeats({}, digest.v2)
    await tick()
    expect(await byFingerprint(`service-down:${C}`, 'resolved')).toMatchObject({state: 'resolved', silenced: true})
    expect(sink.of(`service-down:${C}`)).toEqual([])

    // Ending a silence early is audited; an unknown one is 404.
    const ended = await as('olga').unsilenceAlerts(fleetWide.id)
    expect(ended).toMatchObject({id: fleetWide.id, active: false})
    expect((await audit(fleetWide.id, 'alert.unsilence')).map((e) => e.action)).toEqual(['alert.silence', 'alert.unsilence'])
    await expect(as('olga').unsilenceAlerts(fleetWide.id)).rejects.toMatchObject({status: 404, code: 'SILENCE_UNKNOWN'})
    await expect(as('vera').unsilenceAlerts(fleetWide.id)).rejects.toMatchObject({status: 403})
  })

  it('/metrics counts alerts by rule and state and times evaluations', async () => {
    const text = await as('vera').request<string>('GET', '/metrics')
    expect(text).toMatch(new RegExp(`jil_hq_alerts\\{rule="disk-critical",state="resolved"\\} [1-9]`))
    expect(text).toContain('jil_hq_alerts{rule="cert-expiring",state="open"} 0')
    expect(text).toMatch(/jil_hq_alert_evaluation_duration_seconds_count [1-9]/)
    expect(text).toMatch(/jil_hq_alert_evaluations_total\{outcome="ok"\} [1-9]/)
  })

  it.runIf(existsSync(join(BIN, '../../dist/commands/alerts/list.js')))('the CLI lists, refuses a bad duration (exit 2) and an unknown alert (exit 1)', async () => {
    const hqFlags = ['--hq', hq.url, '--user', init.admin_bundle]
    const list = await jil(['alerts', 'list', '--state', 'resolved', '--rule', 'disk-critical', '--json', ...hqFlags])
    expect(list.code).toBe(0)
    expect((list.json() as {alerts: AlertView[]}).alerts.map((a) => a.fingerprint)).toContain(`disk-critical:${B}`)
    const bad = await jil(['alerts', 'silence', '--rule', 'disk-critical', '--for', '2x', '--reason', 'r', '--json', ...hqFlags])
    expect(bad.code).toBe(2)
    expect(bad.json()).toMatchObject({error: {code: 'DURATION_INVALID'}})
    const badRule = await jil(['alerts', 'silence', '--rule', 'disk-full', '--for', '2h', '--reason', 'r', '--json', ...hqFlags])
    expect(badRule.code).toBe(2)
    const unknown = await jil(['alerts', 'ack', `al_${'0'.repeat(20)}`, '--json', ...hqFlags])
    expect(unknown.code).toBe(1)
    expect(unknown.json()).toMatchObject({error: {code: 'ALERT_UNKNOWN'}})
    const silence = await jil(['alerts', 'silence', '--rule', 'sync-lag', '--node', A.toLowerCase(), '--for', '2h', '--reason', 'resync', '--json', ...hqFlags])
    expect(silence.code).toBe(0)
    expect(silence.json() as SilenceView).toMatchObject({rule: 'sync-lag', node_id: A, created_by: 'admin'})
    const silences = await jil(['alerts', 'silences', '--json', ...hqFlags])
    expect((silences.json() as {silences: SilenceView[]}).silences.map((s) => s.node_id)).toContain(A)
  })

  // Last but one: it moves the clock by weeks.
  it('cert-expiring: a warning 10 days before the node certificate expires, critical at 7 (notified again), resolved by renewal', async () => {
    clock.advance(21 * DAY)
    await heartbeats({}, digest.v2)
    await tick()
    expect(await openFingerprints()).toEqual([`cert-expiring:${A}`, `cert-expiring:${B}`, `cert-expiring:${C}`])
    const warning = (await byFingerprint(`cert-expiring:${A}`))!
    expect(warning).toMatchObject({severity: 'warning'})
    clock.advance(3 * DAY)
    await heartbeats({}, digest.v2)
    await tick()
    expect(await byFingerprint(`cert-expiring:${A}`)).toMatchObject({id: warning.id, severity: 'critical'})
    // Worse than when it was notified: notified again (a PagerDuty trigger of the same dedup_key updates the incident).
    const notified = () => sink.events.filter((e) => e.alert.fingerprint === `cert-expiring:${A}`).map((e) => [e.kind, e.alert.severity])
    expect(notified()).toEqual([['opened', 'warning'], ['opened', 'critical']])
    await tick()
    expect(notified()).toHaveLength(2)
    await renewNode({stateDir: nodes[A]!.node.stateDir, clock})
    await tick()
    expect(await openFingerprints()).toEqual([`cert-expiring:${B}`, `cert-expiring:${C}`])
    expect(notified()).toEqual([['opened', 'warning'], ['opened', 'critical'], ['resolved', 'critical']])
  })

  // Last: a month later, without a heartbeat (the nodes' certificates would have run out).
  it('resolved alerts and ended silences are pruned after 30 days; open ones stay', async () => {
    const resolvedBefore = (await as('vera').alerts({state: 'resolved'})).alerts
    expect(resolvedBefore.length).toBeGreaterThan(3)
    const endedBefore = (await as('vera').alertSilences({all: true})).silences.filter((s) => !s.active)
    expect(endedBefore.length).toBeGreaterThan(0)
    const stillOpen = await openFingerprints()
    clock.advance(31 * DAY)
    const r = await tick()
    // Every resolved alert resolved over 30 days ago, and every silence that ended then, is gone.
    expect(r.pruned).toBeGreaterThanOrEqual(resolvedBefore.length + endedBefore.length)
    const resolvedAfter = new Set((await as('vera').alerts({state: 'resolved'})).alerts.map((a) => a.id))
    expect(resolvedBefore.filter((a) => resolvedAfter.has(a.id))).toEqual([])
    const silencesAfter = new Set((await as('vera').alertSilences({all: true})).silences.map((s) => s.id))
    expect(endedBefore.filter((s) => silencesAfter.has(s.id))).toEqual([])
    // Open alerts are never pruned, however old: what was open is open or resolved just now (and kept).
    const now = new Set([...(await openFingerprints()), ...(await as('vera').alerts({state: 'resolved'})).alerts.map((a) => a.fingerprint)])
    for (const fp of stillOpen) expect(now.has(fp)).toBe(true)
    expect(await tick()).toMatchObject({pruned: 0})
  })
})

/** Two evaluators on one database (two HQ replicas): exactly one evaluates, never both at once. */
describe.each(dbAdapters())('two evaluators on one $name database', (adapter) => {
  let opened: Awaited<ReturnType<(typeof adapter)['open']>>
  let second: Db
  beforeAll(async () => {
    opened = await adapter.open()
    // Another replica: its own pool on PostgreSQL; PGlite is one process, so the same handle.
    second = adapter.name === 'pg' ? await openPg(opened.url!) : opened.db
    await opened.db.query("INSERT INTO operators (name, kyc, created_at, updated_at) VALUES ('Two Replicas AG', 'approved', now(), now())")
    await opened.db.query(
      "INSERT INTO nodes (id, zone, operator, track, status, created_at, joined_at) VALUES ('CH-TWO-01', 'CH/FINMA', 'Two Replicas AG', 'devnet', 'active', now() - interval '1 day', now() - interval '1 day')",
    )
  })
  afterAll(async () => {
    if (second !== opened?.db) await second?.close()
    await opened?.cleanup()
  })

  it('the evaluator predicts the running_key the database derives from a heartbeat', async () => {
    const services = [
      {name: 'validator', digest: `sha256:${'a'.repeat(64)}`},
      {name: 'api-gw_2', digest: null},
      {name: 'worker', digest: `sha256:${'b'.repeat(64)}`},
    ]
    const body = {node_id: 'CH-TWO-01', system: {disk_percent: 91.5}, sync: {lag_s: 12}, services: services.map((s, i) => ({...s, critical: i === 0, state: i === 0 ? 'exited' : 'running', health: 'none', version: null}))}
    await opened.db.query('INSERT INTO node_heartbeats (node_id, received_at, body) VALUES ($1, now(), $2)', ['CH-TWO-01', JSON.stringify(body)])
    const {rows} = await opened.db.query<{running_key: string; disk_percent: number; sync_lag_s: number; critical_down: boolean}>(
      "SELECT running_key, disk_percent, sync_lag_s, critical_down FROM node_heartbeats WHERE node_id = 'CH-TWO-01'",
    )
    expect(rows[0]).toEqual({running_key: runningKey(services), disk_percent: 91.5, sync_lag_s: 12, critical_down: true})
    expect(runningKey([])).toBe((await opened.db.query<{k: string}>("SELECT md5('[]' || '[]') AS k")).rows[0]!.k)
    await opened.db.query("DELETE FROM node_heartbeats WHERE node_id = 'CH-TWO-01'")
  })

  it('only the lock holder evaluates; the other takes over once it stops', async () => {
    const clock = new ManualClock(new Date())
    let inFlight = 0
    let overlaps = 0
    // Each evaluation asks for the three tracks' stacks at once: count evaluations in flight across both.
    const resolver = (): TrackResolver => {
      let started = 0
      let finished = 0
      return {
        async view(track) {
          if (started++ % 3 === 0 && inFlight++ > 0) overlaps++
          await new Promise((r) => setTimeout(r, 5))
          if (++finished % 3 === 0) inFlight--
          return {track, stack: null, versions: {}}
        },
      }
    }
    const one = new AlertEvaluator(opened.db, resolver(), clock)
    const two = new AlertEvaluator(second, resolver(), clock)
    try {
      const rounds = []
      for (let i = 0; i < 10; i++) {
        clock.advance(MIN)
        rounds.push(await Promise.all([one.tick(), two.tick()]))
      }
      for (const [a, b] of rounds) expect([a.evaluated, b.evaluated].filter(Boolean)).toHaveLength(1)
      const leader = rounds[0]![0].evaluated ? one : two
      const standby = leader === one ? two : one
      expect(rounds.every(([a]) => a.evaluated === (leader === one))).toBe(true)
      expect(overlaps).toBe(0)
      // One open alert for the silent node, however many ticks.
      const {rows} = await opened.db.query<{fingerprint: string; state: string}>('SELECT fingerprint, state FROM alerts')
      expect(rows).toEqual([{fingerprint: 'heartbeat-stale:CH-TWO-01', state: 'open'}])

      await leader.stop()
      expect(await standby.tick()).toMatchObject({evaluated: true, opened: 0, updated: 1})
      expect(standby.leading).toBe(true)
    } finally {
      await one.stop()
      await two.stop()
    }
  })
})
