import {describe, expect, it} from 'vitest'

import {DEFAULT_ALERT_CONFIG, duration, evaluate, type AlertConfig, type DesiredRef, type FleetSnapshot, type SnapshotNode, type SnapshotRollout, type SnapshotService} from '../../src/hq/alerts/rules.js'
import type {AlertRule} from '../../src/shared/alerts.js'

const NOW = new Date('2026-11-28T10:00:00Z')
const ago = (ms: number) => new Date(NOW.getTime() - ms)
const MIN = 60_000
const HOUR = 3_600_000
const DAY = 86_400_000
const V1 = `sha256:${'1'.repeat(64)}`
const V2 = `sha256:${'2'.repeat(64)}`
const ROGUE = `sha256:${'f'.repeat(64)}`

const svc = (name: string, o: Partial<SnapshotService> = {}): SnapshotService => ({name, critical: true, state: 'running', health: 'healthy', digest: V1, ...o})

/** A healthy node: heard from a minute ago, on the desired digest, cert 25 days to go, nothing found. */
function node(id: string, o: Partial<SnapshotNode> & {hb?: Partial<NonNullable<SnapshotNode['heartbeat']>>} = {}): SnapshotNode {
  const {hb, ...rest} = o
  return {
    id,
    zone: 'CH/FINMA',
    track: 'mainnet',
    runMode: 'running',
    joinedAt: ago(30 * DAY),
    upgrading: false,
    lastHeartbeatAt: ago(MIN),
    heartbeat: {diskPercent: 40, syncLagS: 0, services: [svc('api'), svc('worker', {critical: false})], ...hb},
    certNotAfter: new Date(NOW.getTime() + 25 * DAY),
    securityCritical: [],
    pins: null,
    ...rest,
  }
}

const desiredV1: DesiredRef = {digest: V1, version: 'v1.0', since: ago(DAY)}

/** A fleet with these nodes and rollouts: V1 signed on every track and desired for api and worker on mainnet. */
function fleet(nodes: SnapshotNode[], o: {rollouts?: SnapshotRollout[]; desired?: Map<string, DesiredRef>; signed?: string[]} = {}): FleetSnapshot {
  const signed = new Set(o.signed ?? [V1, V2])
  const desired = o.desired ?? new Map([['api', desiredV1], ['worker', desiredV1]])
  return {nodes, signed: {devnet: signed, testnet: signed, mainnet: signed}, desired: {devnet: new Map(), testnet: new Map(), mainnet: desired}, rollouts: o.rollouts ?? []}
}

const cfg = (o: Partial<AlertConfig> = {}): AlertConfig => ({...DEFAULT_ALERT_CONFIG, ...o})
const fired = (f: FleetSnapshot, c: AlertConfig = cfg(), now = NOW) => evaluate(f, c, now)
const only = (f: FleetSnapshot, rule: AlertRule, c?: AlertConfig) => fired(f, c).filter((x) => x.rule === rule)

describe('alert rules', () => {
  it('a healthy fleet fires nothing', () => {
    expect(fired(fleet([node('CH-ZUG-01'), node('SG-SIN-01', {track: 'mainnet'})]))).toEqual([])
  })

  it('heartbeat-stale: over 5 minutes since the last heartbeat (or since joining, never heard from); the threshold is configurable', () => {
    const f = fleet([node('CH-ZUG-01', {lastHeartbeatAt: ago(6 * MIN)}), node('CH-ZUG-02', {lastHeartbeatAt: ago(4 * MIN)}), node('CH-ZUG-03', {lastHeartbeatAt: null, heartbeat: null, joinedAt: ago(10 * MIN)})])
    const stale = only(f, 'heartbeat-stale')
    expect(stale.map((s) => s.subject)).toEqual(['CH-ZUG-01', 'CH-ZUG-03'])
    expect(stale[0]).toMatchObject({fingerprint: 'heartbeat-stale:CH-ZUG-01', nodeId: 'CH-ZUG-01', severity: 'critical', summary: 'CH-ZUG-01: no heartbeat for 6m', details: {silent_s: 360}, since: ago(MIN)})
    expect(stale[1]!.summary).toBe('CH-ZUG-03: no heartbeat since it joined 10m ago')
    // Cleared: a fresh heartbeat.
    expect(only(fleet([node('CH-ZUG-01')]), 'heartbeat-stale')).toEqual([])
    // Configurable: 3 minutes makes the second stale too.
    expect(only(f, 'heartbeat-stale', cfg({heartbeatStaleMs: 3 * MIN})).map((s) => s.subject)).toEqual(['CH-ZUG-01', 'CH-ZUG-02', 'CH-ZUG-03'])
  })

  it('cert-expiring: warning within the warning days, critical within the critical days or expired', () => {
    const f = fleet([
      node('CH-ZUG-01', {certNotAfter: new Date(NOW.getTime() + 9 * DAY)}),
      node('CH-ZUG-02', {certNotAfter: new Date(NOW.getTime() + 3 * DAY)}),
      node('CH-ZUG-03', {certNotAfter: ago(2 * DAY)}),
      node('CH-ZUG-04'),
      node('CH-ZUG-05', {certNotAfter: null}),
    ])
    const certs = only(f, 'cert-expiring')
    expect(certs.map((c) => [c.subject, c.severity])).toEqual([
      ['CH-ZUG-01', 'warning'],
      ['CH-ZUG-02', 'critical'],
      ['CH-ZUG-03', 'critical'],
    ])
    expect(certs[0]!.summary).toBe('CH-ZUG-01: its certificate expires in 9d')
    expect(certs[2]!.summary).toBe('CH-ZUG-03: its certificate expired 2d ago')
    // The 30 days, configured: the 25-day cert warns too.
    expect(only(f, 'cert-expiring', cfg({certWarningDays: 30})).map((c) => c.subject)).toContain('CH-ZUG-04')
  })

  it('image-unsigned: a digest with no live manifest on the node\'s track', () => {
    const f = fleet([node('CH-ZUG-01', {hb: {services: [svc('api', {digest: ROGUE}), svc('worker', {digest: null, state: 'missing', critical: false})]}}), node('CH-ZUG-02')])
    const u = only(f, 'image-unsigned')
    expect(u).toHaveLength(1)
    expect(u[0]).toMatchObject({subject: 'CH-ZUG-01', severity: 'critical', details: {track: 'mainnet', services: [{service: 'api', digest: ROGUE}]}})
    // Signed on devnet only is not signed for mainnet.
    const devOnly = fleet([node('CH-ZUG-01', {hb: {services: [svc('api', {digest: V2})]}})], {signed: [V1]})
    devOnly.signed = {...devOnly.signed, devnet: new Set([V1, V2])}
    expect(only(devOnly, 'image-unsigned')).toHaveLength(1)
    expect(only(fleet([node('CH-ZUG-01')]), 'image-unsigned')).toEqual([])
  })

  it('image-unsigned in the registry: one warning per unsigned digest, apart from a node running one (critical); cleared once the walk no longer lists it', () => {
    const repo = '127.0.0.1:5000/jil/settlement-api'
    const f = fleet([node('CH-ZUG-01', {hb: {services: [svc('api', {digest: ROGUE})]}}), node('CH-ZUG-02')])
    f.registryUnsigned = [
      {repository: repo, tags: ['v95.4', 'latest'], digest: ROGUE},
      {repository: '127.0.0.1:5000/jil/wallet-api', tags: [], digest: V2},
    ]
    const u = only(f, 'image-unsigned')
    expect(u.map((x) => [x.subject, x.nodeId, x.severity])).toEqual([
      ['CH-ZUG-01', 'CH-ZUG-01', 'critical'],
      [`registry:${repo}@${ROGUE}`, null, 'warning'],
      [`registry:127.0.0.1:5000/jil/wallet-api@${V2}`, null, 'warning'],
    ])
    expect(u[1]).toMatchObject({
      fingerprint: `image-unsigned:registry:${repo}@${ROGUE}`,
      summary: `${repo} sha256:ffffffffffff (v95.4, latest) in the registry has no signed manifest`,
      details: {repository: repo, tags: ['v95.4', 'latest'], digest: ROGUE},
    })
    expect(u[2]!.summary).toBe('127.0.0.1:5000/jil/wallet-api sha256:222222222222 (untagged) in the registry has no signed manifest')
    // Signed since (the walk's digests are filtered against the manifests): only the node's alert is left.
    f.registryUnsigned = []
    expect(only(f, 'image-unsigned').map((x) => x.subject)).toEqual(['CH-ZUG-01'])
    // No walk yet (or no registry): nothing about the registry either.
    delete f.registryUnsigned
    expect(only(f, 'image-unsigned').map((x) => x.subject)).toEqual(['CH-ZUG-01'])
  })

  it('service-down: a critical service not running or unhealthy, unless the node is paused, stopped or being upgraded', () => {
    const down = {hb: {services: [svc('api', {state: 'exited'}), svc('db', {health: 'unhealthy'}), svc('worker', {critical: false, state: 'exited'})]}}
    const f = fleet([node('CH-ZUG-01', down), node('CH-ZUG-02', {...down, runMode: 'stopped'}), node('CH-ZUG-03', {...down, upgrading: true}), node('CH-ZUG-04')])
    const d = only(f, 'service-down')
    expect(d.map((x) => x.subject)).toEqual(['CH-ZUG-01'])
    expect(d[0]).toMatchObject({severity: 'critical', summary: 'CH-ZUG-01: api exited, db unhealthy', details: {services: [{service: 'api', state: 'exited', health: 'healthy'}, {service: 'db', state: 'running', health: 'unhealthy'}]}})
  })

  it('disk-critical: above 90 % (configurable)', () => {
    const f = fleet([node('CH-ZUG-01', {hb: {diskPercent: 93.44}}), node('CH-ZUG-02', {hb: {diskPercent: 90}})])
    expect(only(f, 'disk-critical').map((x) => [x.subject, x.summary])).toEqual([['CH-ZUG-01', 'CH-ZUG-01: disk 93.4 % full']])
    expect(only(f, 'disk-critical', cfg({diskCriticalPercent: 85})).map((x) => x.subject)).toEqual(['CH-ZUG-01', 'CH-ZUG-02'])
  })

  it('version-drift: another digest than desired for longer than the grace period after the desired one changed; node pins win', () => {
    const justPinned = new Map([['api', {digest: V2, version: 'v2.0', since: ago(5 * MIN)}]])
    const longPinned = new Map([['api', {digest: V2, version: 'v2.0', since: ago(20 * MIN)}]])
    expect(only(fleet([node('CH-ZUG-01')], {desired: justPinned}), 'version-drift')).toEqual([])
    const drift = only(fleet([node('CH-ZUG-01'), node('CH-ZUG-02', {hb: {services: [svc('api', {digest: V2})]}})], {desired: longPinned}), 'version-drift')
    expect(drift).toHaveLength(1)
    expect(drift[0]).toMatchObject({subject: 'CH-ZUG-01', severity: 'warning', details: {services: [{service: 'api', digest: V1, desired: V2, desired_version: 'v2.0'}]}})
    expect(drift[0]!.summary).toBe(`CH-ZUG-01: api runs ${V1.slice(0, 19)}, should run v2.0`)
    // A node pin (a rollout's, a rollback's) over the track's: this node should run V1, so no drift.
    const pinned = node('CH-ZUG-01', {pins: new Map([['api', desiredV1]])})
    expect(only(fleet([pinned], {desired: longPinned}), 'version-drift')).toEqual([])
    // A node a rollout moves now is the rollout's to judge.
    expect(only(fleet([node('CH-ZUG-01', {upgrading: true})], {desired: longPinned}), 'version-drift')).toEqual([])
    // The grace period is configurable.
    expect(only(fleet([node('CH-ZUG-01')], {desired: justPinned}), 'version-drift', cfg({driftGraceMs: MIN}))).toHaveLength(1)
  })

  it('sync-lag: warning over 60 s, critical over 600 s; no sync reported is no alert', () => {
    const f = fleet([node('CH-ZUG-01', {hb: {syncLagS: 120}}), node('CH-ZUG-02', {hb: {syncLagS: 900}}), node('CH-ZUG-03', {hb: {syncLagS: null}}), node('CH-ZUG-04', {hb: {syncLagS: 30}})])
    expect(only(f, 'sync-lag').map((x) => [x.subject, x.severity, x.summary])).toEqual([
      ['CH-ZUG-01', 'warning', 'CH-ZUG-01: event sync 2m behind'],
      ['CH-ZUG-02', 'critical', 'CH-ZUG-02: event sync 15m behind'],
    ])
    expect(only(f, 'sync-lag', cfg({syncLagWarningS: 10})).map((x) => x.subject)).toEqual(['CH-ZUG-01', 'CH-ZUG-02', 'CH-ZUG-04'])
  })

  it('rollout-failed: failed, reverting or reverted, within the window, until a later rollout of the image over the same target succeeds', () => {
    const target = JSON.stringify({zone: 'CH/FINMA'})
    const r = (id: string, seq: number, state: SnapshotRollout['state'], at: Date, o: Partial<SnapshotRollout> = {}): SnapshotRollout => ({id, seq, state, target, image: 'jil/api', version: 'v2.0', reason: 'node CH-ZUG-01 unhealthy', at, ...o})
    const f = fleet([], {rollouts: [r('ro_a', 1, 'failed', ago(HOUR)), r('ro_b', 2, 'reverted', ago(2 * HOUR)), r('ro_c', 3, 'reverting', ago(3 * HOUR)), r('ro_old', 0, 'failed', ago(25 * HOUR))]})
    const found = only(f, 'rollout-failed')
    expect(found.map((x) => [x.subject, x.severity])).toEqual([
      ['ro_a', 'critical'],
      ['ro_b', 'warning'],
      ['ro_c', 'critical'],
    ])
    expect(found[0]).toMatchObject({nodeId: null, fingerprint: 'rollout-failed:ro_a', since: ago(HOUR), summary: 'rollout ro_a of jil/api v2.0 failed: node CH-ZUG-01 unhealthy', details: {target: {zone: 'CH/FINMA'}}})
    // A later success over the same target clears the earlier failures; one over another target does not.
    const fixed = fleet([], {rollouts: [r('ro_a', 1, 'failed', ago(HOUR)), r('ro_d', 4, 'succeeded', ago(MIN)), r('ro_e', 5, 'failed', ago(MIN), {target: JSON.stringify({node: 'SG-SIN-01'})})]})
    expect(only(fixed, 'rollout-failed').map((x) => x.subject)).toEqual(['ro_e'])
    // The window is configurable.
    expect(only(f, 'rollout-failed', cfg({rolloutFailedForMs: 30 * MIN})).map((x) => x.subject)).toEqual(['ro_c'])
  })

  it('security-critical: the critical findings of the latest security report', () => {
    const f = fleet([node('CH-ZUG-01', {securityCritical: [{id: 'ssh-permit-root-login', title: 'SSH allows root login'}, {id: 'port-open:6379', title: 'Port 6379 open'}]}), node('CH-ZUG-02')])
    const s = only(f, 'security-critical')
    expect(s).toHaveLength(1)
    expect(s[0]).toMatchObject({subject: 'CH-ZUG-01', severity: 'critical', summary: 'CH-ZUG-01: 2 critical security findings (SSH allows root login, …)', details: {findings: [{id: 'ssh-permit-root-login'}, {id: 'port-open:6379'}]}})
  })

  it('one finding per rule and subject, in one pass over many nodes', () => {
    const nodes = Array.from({length: 1000}, (_, i) => node(`CH-N${i}-01`, {hb: {diskPercent: 95, services: [svc('api', {state: 'exited'}), svc('db', {state: 'exited'})]}}))
    const f = fired(fleet(nodes))
    expect(f).toHaveLength(2000)
    expect(new Set(f.map((x) => x.fingerprint)).size).toBe(2000)
  })

  it('durations read as the two largest units', () => {
    expect([duration(0), duration(59_000), duration(90_000), duration(3 * DAY + 5 * MIN), duration(26 * HOUR)]).toEqual(['0s', '59s', '1m30s', '3d5m', '1d2h'])
  })
})

