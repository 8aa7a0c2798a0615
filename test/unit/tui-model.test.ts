import {describe, expect, it} from 'vitest'

import {
  agentRows,
  alertsIn,
  apply,
  applyAll,
  CowMap,
  broadcastResults,
  certBucket,
  emptyFleet,
  fit,
  fitColumns,
  fromSnapshot,
  KEEP_RESOLVED_ALERTS,
  lagText,
  matchesFilter,
  nextTrack,
  nodeCells,
  NODE_COLUMNS,
  NodeOrder,
  overview,
  OverviewTally,
  parseFilter,
  progressBar,
  ROW_PREFIX,
  COLUMN_GAP,
  security,
  serviceRows,
  sortNodes,
  statusAt,
  syncCell,
  upgradeCandidates,
  visibleNodes,
  windowAt,
  ZONES,
} from '../../src/tui/model.js'
import type {FleetNode} from '../../src/shared/api.js'
import {alertView, fleetCommand, fleetNode, imageRow, NOW, rolloutView, snapshot} from '../helpers/tui.js'

const ago = (s: number) => new Date(NOW.getTime() - s * 1000).toISOString()

/** A small deterministic random source (mulberry32): rand(n) is an integer in [0, n). */
function seeded(seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4_294_967_296) * n)
  }
}

describe('the fleet store', () => {
  it('loads a snapshot by id and upserts what events carry, whole', () => {
    const s0 = fromSnapshot(snapshot({nodes: [fleetNode({id: 'CH-ZUG-01'}), fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS'})], alerts: [alertView()]}))
    expect([...s0.nodes.keys()].sort()).toEqual(['CH-ZUG-01', 'SG-MAS-01'])
    const s1 = apply(s0, {type: 'nodes', nodes: [fleetNode({id: 'CH-ZUG-01', status: 'paused', run_mode: 'paused'}), fleetNode({id: 'DE-FRA-01', zone: 'DE/BAFIN'})]})
    expect(s1.nodes.get('CH-ZUG-01')!.status).toBe('paused')
    expect(s1.nodes.size).toBe(3)
    expect(s1.rev).toBe(s0.rev + 1)
    // The state it came from is untouched: views memoised on it stay right.
    expect(s0.nodes.get('CH-ZUG-01')!.status).toBe('active')
    expect(s0.nodes.size).toBe(2)
  })

  it('keeps a fresher copy over an older one that arrives late', () => {
    const fresh = fleetNode({last_heartbeat_at: ago(5), versions: {api: 'v96.0'}})
    const old = fleetNode({last_heartbeat_at: ago(65), versions: {api: 'v95.3'}})
    const s = apply(fromSnapshot(snapshot({nodes: [fresh]})), {type: 'nodes', nodes: [old]})
    expect(s.nodes.get(fresh.id)!.versions.api).toBe('v96.0')
    // Same heartbeat, new status (a pause): applied.
    const paused = apply(s, {type: 'nodes', nodes: [{...fresh, status: 'paused'}]})
    expect(paused.nodes.get(fresh.id)!.status).toBe('paused')

    const acked = alertView({state: 'acked', acked_by: 'bob'})
    const s2 = apply(fromSnapshot(snapshot({alerts: [acked]})), {type: 'alerts', alerts: [alertView({state: 'open'})]})
    expect(s2.alerts.get(acked.id)!.state).toBe('acked')

    const done = fleetCommand({status: 'succeeded', result: {ok: true, summary: 'refreshed'}})
    const s3 = apply(fromSnapshot(snapshot({commands: [done]})), {type: 'commands', commands: [fleetCommand({status: 'delivered'})]})
    expect(s3.commands.get(done.id)!.status).toBe('succeeded')

    const r = rolloutView({updated_at: '2026-01-10T11:58:00Z', counts: {done: 2}})
    const s4 = apply(fromSnapshot(snapshot({rollouts: [r]})), {type: 'rollouts', rollouts: [rolloutView({updated_at: '2026-01-10T11:50:00Z'})]})
    expect(s4.rollouts.get(r.id)!.counts.done).toBe(2)
  })

  it('copies each map once per batch and leaves the state as is when nothing changed', () => {
    const s0 = fromSnapshot(snapshot({nodes: [fleetNode()]}))
    const events = Array.from({length: 50}, (_, i) => ({type: 'nodes' as const, nodes: [fleetNode({id: `CH-ZUG-${String(i).padStart(2, '0')}`})]}))
    const s1 = applyAll(s0, events)
    expect(s1.nodes.size).toBe(50)
    expect(s1.rev).toBe(s0.rev + 1)
    expect(s1.alerts).toBe(s0.alerts)
    expect(applyAll(s1, [{type: 'ready', at: NOW.toISOString()}])).toBe(s1)
  })

  it('copies on write only the buckets a change touches', () => {
    const a = CowMap.of(Array.from({length: 1000}, (_, i) => [`N${i}`, i] as const))
    const b = a.with([['N1', -1], ['NEW', 7]])
    const c = b.without(['N2', 'NOPE'])
    expect([a.size, b.size, c.size]).toEqual([1000, 1001, 1000])
    expect([a.get('N1'), b.get('N1'), a.has('NEW'), b.get('NEW'), b.has('N2'), c.has('N2')]).toEqual([1, -1, false, 7, true, false])
    expect(a.with([])).toBe(a)
    expect(c.without(['NOPE'])).toBe(c)
    expect(c.list()).toHaveLength(1000)
    expect(new Set(c.keys()).size).toBe(1000)
    expect([...c.values()].sort((x, y) => x - y).slice(0, 2)).toEqual([-1, 0])
    let n = 0
    c.forEach(() => n++)
    expect(n).toBe(1000)
  })

  it('keeps only the newest resolved alerts', () => {
    const resolved = Array.from({length: KEEP_RESOLVED_ALERTS + 5}, (_, i) =>
      alertView({id: `al_${String(i).padStart(20, '0')}`, state: 'resolved', resolved_at: new Date(NOW.getTime() - i * 1000).toISOString()}),
    )
    const s = apply(emptyFleet, {type: 'alerts', alerts: resolved})
    expect(s.alerts.size).toBe(KEEP_RESOLVED_ALERTS)
    expect(s.alerts.has(resolved[0]!.id)).toBe(true)
    expect(s.alerts.has(resolved.at(-1)!.id)).toBe(false)
  })
})

describe('status and cells at a time', () => {
  it('turns a silent node offline after three missed heartbeats, as HQ does', () => {
    expect(statusAt(fleetNode({last_heartbeat_at: ago(170)}), NOW)).toBe('active')
    expect(statusAt(fleetNode({last_heartbeat_at: ago(180)}), NOW)).toBe('offline')
    expect(statusAt(fleetNode({status: 'paused', last_heartbeat_at: ago(200)}), NOW)).toBe('offline')
    expect(statusAt(fleetNode({status: 'revoked', last_heartbeat_at: ago(9999)}), NOW)).toBe('revoked')
    expect(statusAt(fleetNode({status: 'pending', last_heartbeat_at: null}), NOW)).toBe('pending')
  })

  it('renders cells: ages, percentages, mixed versions, certificate days', () => {
    const c = nodeCells(fleetNode({last_heartbeat_at: ago(125), versions: {api: 'v95.3', settlement: 'v96.0', web: null}, cert_not_after: new Date(NOW.getTime() + 3.5 * 86_400_000).toISOString()}), NOW)
    expect(c).toMatchObject({heartbeat: '2m', cpu: '12%', mem: '25%', disk: '50%', version: 'v96.0+1', cert: '3d'})
    expect(nodeCells(fleetNode({cert_not_after: ago(60), system: null, last_heartbeat_at: null}), NOW)).toMatchObject({cert: 'expired', cpu: '-', heartbeat: 'never', status: 'offline'})
  })

  it('renders event sync: ok when caught up, the lag when behind, - when the node reports none', () => {
    expect(nodeCells(fleetNode({sync: {lag_s: 3.24, caught_up: false}}), NOW).sync).toBe('3.2s')
    expect(nodeCells(fleetNode({sync: {lag_s: 0.8, caught_up: true}}), NOW).sync).toBe('ok')
    expect(nodeCells(fleetNode({sync: null}), NOW).sync).toBe('-')
    expect(nodeCells(fleetNode(), NOW).sync).toBe('-') // from an HQ that does not send it
    expect([syncCell({lag_s: 42.4, caught_up: false}), syncCell({lag_s: 320, caught_up: false}), syncCell({lag_s: 7200, caught_up: false})]).toEqual(['42s', '5m', '2h'])
    expect([lagText(0), lagText(9.96), lagText(-1)]).toEqual(['0.0s', '10.0s', '0.0s'])
  })
})

describe('filter', () => {
  const nodes = [
    fleetNode({id: 'CH-ZUG-01'}),
    fleetNode({id: 'CH-ZUG-02', last_heartbeat_at: ago(600)}),
    fleetNode({id: 'CH-GVA-01'}),
    fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS', last_heartbeat_at: ago(600)}),
    fleetNode({id: 'US-NYC-01', zone: 'US/FINCEN', status: 'paused'}),
  ]
  const ids = (q: string) => nodes.filter((n) => matchesFilter(n, parseFilter(q), NOW)).map((n) => n.id)

  it('matches a substring of the id, any case', () => {
    expect(ids('zug')).toEqual(['CH-ZUG-01', 'CH-ZUG-02'])
    expect(ids('-01')).toEqual(['CH-ZUG-01', 'CH-GVA-01', 'SG-MAS-01', 'US-NYC-01'])
    expect(ids('')).toHaveLength(5)
  })

  it('matches zone: and status: and combines terms', () => {
    expect(ids('zone:SG/MAS')).toEqual(['SG-MAS-01'])
    expect(ids('zone:ch_finma')).toEqual(['CH-ZUG-01', 'CH-ZUG-02', 'CH-GVA-01'])
    expect(ids('zone:CH')).toEqual(['CH-ZUG-01', 'CH-ZUG-02', 'CH-GVA-01'])
    expect(ids('status:offline')).toEqual(['CH-ZUG-02', 'SG-MAS-01'])
    expect(ids('zone:CH/FINMA status:offline')).toEqual(['CH-ZUG-02'])
    expect(ids('zone:CH/FINMA status:offline gva')).toEqual([])
    expect(ids('status:paused status:offline')).toEqual(['CH-ZUG-02', 'SG-MAS-01', 'US-NYC-01'])
  })

  it('names what it does not understand instead of applying it', () => {
    const f = parseFilter('status:sleeping colour:red zug')
    expect(f.invalid).toEqual(['status:sleeping', 'colour:red'])
    expect(f.text).toEqual(['ZUG'])
  })
})

describe('sort', () => {
  const nodes = [
    fleetNode({id: 'B-NODE-01', zone: 'SG/MAS', versions: {api: 'v95.10'}, system: {...fleetNode().system!, cpu_percent: 80}}),
    fleetNode({id: 'A-NODE-01', zone: 'CH/FINMA', versions: {api: 'v95.9'}, last_heartbeat_at: ago(600)}),
    fleetNode({id: 'C-NODE-01', zone: 'AE/FSRA', versions: {api: 'v96.0'}, system: null}),
  ]
  const ids = (key: Parameters<typeof sortNodes>[1]['key'], desc = false) => sortNodes(nodes, {key, desc}, NOW).map((n) => n.id)

  it('sorts by each key, versions numerically, worst status first', () => {
    expect(ids('id')).toEqual(['A-NODE-01', 'B-NODE-01', 'C-NODE-01'])
    expect(ids('id', true)).toEqual(['C-NODE-01', 'B-NODE-01', 'A-NODE-01'])
    expect(ids('zone')).toEqual(['C-NODE-01', 'A-NODE-01', 'B-NODE-01'])
    expect(ids('version')).toEqual(['A-NODE-01', 'B-NODE-01', 'C-NODE-01'])
    expect(ids('status')).toEqual(['A-NODE-01', 'B-NODE-01', 'C-NODE-01'])
    expect(ids('cpu', true)).toEqual(['B-NODE-01', 'A-NODE-01', 'C-NODE-01'])
    expect(ids('heartbeat', true)).toEqual(['A-NODE-01', 'B-NODE-01', 'C-NODE-01'])
  })

  it('filters then sorts', () => {
    expect(visibleNodes(nodes, parseFilter('node'), {key: 'id', desc: true}, NOW).map((n) => n.id)).toEqual(['C-NODE-01', 'B-NODE-01', 'A-NODE-01'])
  })

  it('sorts by sync lag, nodes without sync lowest; by heartbeat time, not by its age in whole seconds', () => {
    const withSync = [fleetNode({id: 'A-NODE-01', sync: {lag_s: 30, caught_up: false}}), fleetNode({id: 'B-NODE-01', sync: null}), fleetNode({id: 'C-NODE-01', sync: {lag_s: 0.1, caught_up: true}})]
    expect(sortNodes(withSync, {key: 'sync', desc: true}, NOW).map((n) => n.id)).toEqual(['A-NODE-01', 'C-NODE-01', 'B-NODE-01'])
    // Both heard from 1.x s ago: the younger heartbeat first, whatever the ids.
    const close = [fleetNode({id: 'A-NODE-01', last_heartbeat_at: new Date(NOW.getTime() - 1900).toISOString()}), fleetNode({id: 'B-NODE-01', last_heartbeat_at: new Date(NOW.getTime() - 1100).toISOString()}), fleetNode({id: 'C-NODE-01', last_heartbeat_at: null})]
    expect(sortNodes(close, {key: 'heartbeat', desc: false}, NOW).map((n) => n.id)).toEqual(['B-NODE-01', 'A-NODE-01', 'C-NODE-01'])
  })
})

describe('the incremental order', () => {
  // A small deterministic random walk: nodes change, join and leave; the order must always equal a sort from scratch.
  const rand = seeded(42)
  const ZS = ['CH/FINMA', 'SG/MAS', 'AE/FSRA']
  const mk = (i: number, at: Date): FleetNode =>
    fleetNode({
      id: `N${String(i).padStart(4, '0')}-X-01`,
      zone: ZS[rand(3)]!,
      last_heartbeat_at: rand(10) === 0 ? null : new Date(at.getTime() - rand(400) * 1000).toISOString(),
      system: {...fleetNode().system!, cpu_percent: rand(5) * 10},
      versions: {api: `v9${rand(3)}.${rand(3)}`},
      sync: rand(3) === 0 ? null : {lag_s: rand(4), caught_up: rand(2) === 0},
      status: rand(8) === 0 ? 'paused' : 'active',
    })

  it('keeps every filter and sort equal to a sort from scratch as nodes change, join and leave, and time passes', () => {
    for (const q of ['', 'zone:SG/MAS', 'status:offline', 'n00 status:active']) {
      for (const key of ['id', 'zone', 'status', 'version', 'cpu', 'heartbeat', 'sync', 'cert'] as const) {
        for (const desc of [false, true]) {
          let now = NOW
          let map = CowMap.of(Array.from({length: 300}, (_, i) => [`N${String(i).padStart(4, '0')}-X-01`, mk(i, now)] as const))
          const order = new NodeOrder(parseFilter(q), {key, desc})
          order.update(map, now)
          for (let step = 0; step < 12; step++) {
            const changed = Array.from({length: 1 + rand(20)}, () => mk(rand(330), now))
            map = map.with(changed.map((n) => [n.id, n] as const)).without(Array.from({length: rand(3)}, () => `N${String(rand(330)).padStart(4, '0')}-X-01`))
            if (step % 3 === 2) now = new Date(now.getTime() + 61_000) // statuses turn offline as time passes
            order.update(map, now)
            expect(order.ids(), `${q} ${key} ${desc ? 'desc' : 'asc'} step ${step}`).toEqual(visibleNodes(map.list(), parseFilter(q), {key, desc}, now).map((n) => n.id))
          }
        }
      }
    }
  })

  it('moves only what changed: an update for a node shows its new copy, a second update with the same map does nothing', () => {
    const a = fleetNode({id: 'A-NODE-01'})
    let map = CowMap.of([a, fleetNode({id: 'B-NODE-01'})].map((n) => [n.id, n] as const))
    const order = new NodeOrder(parseFilter(''), {key: 'cpu', desc: true})
    order.update(map, NOW)
    const v = order.version
    order.update(map, NOW)
    expect(order.version).toBe(v)
    const a2 = {...a, system: {...a.system!, cpu_percent: 99}}
    map = map.with([[a2.id, a2]])
    order.update(map, NOW)
    expect(order.slice(0, 2)).toEqual([a2, map.get('B-NODE-01')])
    expect(order.version).toBeGreaterThan(v)
  })

  it('finds what changed between two maps by their buckets', () => {
    const m1 = CowMap.of(Array.from({length: 1000}, (_, i) => [`K${i}`, {i}] as const))
    const m2 = m1.with([['K5', {i: 5}], ['NEW', {i: -1}]]).without(['K7'])
    expect(CowMap.changes(m1, m2)).toEqual({changed: expect.arrayContaining(['K5', 'NEW']), removed: ['K7']})
    expect(CowMap.changes(m1, m2).changed).toHaveLength(2)
    expect(CowMap.changes(m2, m2)).toEqual({changed: [], removed: []})
  })
})

describe('columns and window', () => {
  it('keeps every column on a wide terminal and drops the low-value ones on a narrow one', () => {
    expect(fitColumns(120).map((c) => c.key)).toEqual(NODE_COLUMNS.map((c) => c.key))
    const narrow = fitColumns(80)
    expect(narrow.map((c) => c.key)).toEqual(['id', 'zone', 'status', 'version', 'heartbeat', 'cert'])
    const used = ROW_PREFIX + narrow.reduce((s, c) => s + c.width, 0) + COLUMN_GAP * (narrow.length - 1)
    expect(used).toBeLessThanOrEqual(80)
    expect(fitColumns(40).map((c) => c.key)).toEqual(['id', 'zone', 'status'])
    expect(fitColumns(5).map((c) => c.key)).toEqual(['id'])
  })

  it('fits text to a width without wrapping', () => {
    expect(fit('abc', 5)).toBe('abc  ')
    expect(fit('abc', 5, 'right')).toBe('  abc')
    expect(fit('abcdef', 4)).toBe('abc…')
  })

  it('renders only the rows on screen and scrolls as little as it can', () => {
    expect(windowAt(10_000, 0, 20)).toEqual({top: 0, end: 20})
    expect(windowAt(10_000, 19, 20, 0)).toEqual({top: 0, end: 20})
    expect(windowAt(10_000, 20, 20, 0)).toEqual({top: 1, end: 21})
    expect(windowAt(10_000, 5, 20, 10)).toEqual({top: 5, end: 25})
    expect(windowAt(10_000, 9_999, 20, 0)).toEqual({top: 9_980, end: 10_000})
    expect(windowAt(5, 4, 20, 3)).toEqual({top: 0, end: 5})
    expect(windowAt(0, 0, 20)).toEqual({top: 0, end: 0})
  })
})

describe('overview', () => {
  it('counts nodes per status and per zone for all 13 zones, versions per service, sync lag, alerts and rollouts', () => {
    const state = fromSnapshot(
      snapshot({
        nodes: [
          fleetNode({id: 'CH-ZUG-01', versions: {api: 'v95.3'}}),
          fleetNode({id: 'CH-ZUG-02', versions: {api: 'v96.0'}, status: 'degraded'}),
          fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS', versions: {api: 'v96.0'}, last_heartbeat_at: ago(900)}),
          fleetNode({id: 'US-NYC-01', zone: 'US/FINCEN', status: 'revoked', versions: {api: 'v90.0'}}),
        ],
        alerts: [
          alertView({id: 'al_1', rule: 'sync-lag', severity: 'warning', details: {lag_s: 120}}),
          alertView({id: 'al_2', rule: 'sync-lag', severity: 'critical', details: {lag_s: 900}, subject: 'SG-MAS-01'}),
          alertView({id: 'al_3', state: 'acked'}),
          alertView({id: 'al_4', state: 'resolved'}),
        ],
        rollouts: [rolloutView(), rolloutView({id: 'ro_done', state: 'succeeded'})],
      }),
    )
    const o = overview(state, NOW)
    expect(o.total).toBe(4)
    expect(o.byStatus).toMatchObject({active: 1, degraded: 1, offline: 1, revoked: 1, paused: 0})
    expect(o.zones.map((z) => z.zone)).toEqual([...ZONES])
    expect(o.zones.find((z) => z.zone === 'CH/FINMA')).toMatchObject({total: 2, byStatus: {active: 1, degraded: 1}})
    expect(o.zones.find((z) => z.zone === 'HK/SFC')!.total).toBe(0)
    // Revoked nodes run nothing of the fleet's.
    expect(o.versions).toEqual([{service: 'api', versions: [{version: 'v96.0', nodes: 2}, {version: 'v95.3', nodes: 1}]}])
    // No node reports event sync here: the alerts are counted all the same.
    expect(o.syncLag).toEqual({reporting: 0, behind: 0, medianLagS: null, maxLagS: null, worstNode: null, alerts: 2})
    expect(o.alerts).toEqual({open: {critical: 1, warning: 1}, acked: 1})
    expect(o.rollouts).toEqual([{id: 'ro_00000000000000000001', image: 'jil/api', version: 'v96.0', target: 'CH/FINMA', state: 'running', done: 1, failed: 0, total: 4}])
  })

  it('sums up event sync from the heartbeats of the nodes that are up: median, worst and who, how many behind', () => {
    const sync = (lag_s: number, caught_up = lag_s < 1) => ({lag_s, caught_up})
    const o = overview(
      fromSnapshot(
        snapshot({
          nodes: [
            fleetNode({id: 'CH-ZUG-01', sync: sync(0.2)}),
            fleetNode({id: 'CH-ZUG-02', sync: sync(3.5)}),
            fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS', sync: sync(95)}),
            fleetNode({id: 'SG-MAS-02', zone: 'SG/MAS', sync: sync(0.4)}),
            fleetNode({id: 'JP-TKY-01', zone: 'JP/JFSA', sync: null}),
            // Offline (its lag is as old as its heartbeat) and revoked nodes are left out.
            fleetNode({id: 'US-NYC-01', zone: 'US/FINCEN', sync: sync(5000), last_heartbeat_at: ago(900)}),
            fleetNode({id: 'US-NYC-02', zone: 'US/FINCEN', sync: sync(7000), status: 'revoked'}),
          ],
        }),
      ),
      NOW,
    )
    expect(o.syncLag).toEqual({reporting: 4, behind: 2, medianLagS: (0.4 + 3.5) / 2, maxLagS: 95, worstNode: 'SG-MAS-01', alerts: 0})
    const odd = overview(fromSnapshot(snapshot({nodes: [fleetNode({id: 'A-NODE-01', sync: sync(1)}), fleetNode({id: 'B-NODE-01', sync: sync(9)}), fleetNode({id: 'C-NODE-01', sync: sync(2)})]})), NOW)
    expect(odd.syncLag).toMatchObject({medianLagS: 2, maxLagS: 9, worstNode: 'B-NODE-01', behind: 3})
  })

  it('keeps its counts equal to counting from scratch as nodes change, join and leave, and go silent', () => {
    const rand = seeded(7)
    const zones = ['CH/FINMA', 'SG/MAS', 'XX/TEST', 'YY/TEST']
    const statuses = ['active', 'active', 'degraded', 'paused', 'revoked', 'pending', 'offline'] as const
    let now = NOW
    const mk = (i: number) =>
      fleetNode({
        id: `N${String(i).padStart(4, '0')}-X-01`,
        zone: zones[rand(4)]!,
        status: statuses[rand(statuses.length)]!,
        last_heartbeat_at: rand(12) === 0 ? null : new Date(now.getTime() - rand(240) * 1000).toISOString(),
        versions: rand(5) === 0 ? {} : {api: `v9${rand(3)}.0`, worker: rand(4) === 0 ? null : 'v1.0'},
        sync: rand(3) === 0 ? null : {lag_s: rand(50) / 10, caught_up: rand(2) === 0},
      })
    let state = fromSnapshot(snapshot({nodes: Array.from({length: 400}, (_, i) => mk(i))}))
    const tally = new OverviewTally()
    expect(overview(state, now, tally)).toEqual(overview(state, now))
    for (let step = 0; step < 40; step++) {
      const changed = Array.from({length: 1 + rand(15)}, () => mk(rand(420)))
      state = {...state, nodes: state.nodes.with(changed.map((n) => [n.id, n] as const)).without(Array.from({length: rand(4)}, () => `N${String(rand(420)).padStart(4, '0')}-X-01`))}
      now = new Date(now.getTime() + rand(4) * 7_000) // nodes go silent as time passes
      expect(overview(state, now, tally), `step ${step}`).toEqual(overview(state, now))
    }
    // Some of the walk's nodes did turn offline by the time alone.
    expect(overview(state, now).byStatus.offline).toBeGreaterThan(0)
    // The last nodes of a zone outside the 13 move away: its row goes, as when counting from scratch.
    const moved = state.nodes.list().filter((n) => n.zone === 'XX/TEST')
    expect(moved.length).toBeGreaterThan(0)
    state = {...state, nodes: state.nodes.with(moved.map((n) => [n.id, {...n, zone: 'CH/FINMA'}] as const))}
    expect(overview(state, now, tally).zones.map((z) => z.zone)).toEqual([...ZONES, 'YY/TEST'])
    expect(overview(state, now, tally)).toEqual(overview(state, now))
    // A new snapshot (after a reconnect) replaces every copy: counted again from scratch.
    const reloaded = fromSnapshot(snapshot({nodes: state.nodes.list().slice(0, 300).map((n) => ({...n}))}))
    expect(overview(reloaded, now, tally)).toEqual(overview(reloaded, now))
    expect(overview(reloaded, now, tally).total).toBe(300)
  })

  it('shows a zone no migration listed after the 13', () => {
    const o = overview(fromSnapshot(snapshot({nodes: [fleetNode({zone: 'XX/TEST'})]})), NOW)
    expect(o.zones).toHaveLength(14)
    expect(o.zones[13]).toMatchObject({zone: 'XX/TEST', total: 1})
  })

  it('draws progress bars', () => {
    expect(progressBar(1, 4, 10)).toBe('[##......]')
    expect(progressBar(4, 4, 6)).toBe('[####]')
    expect(progressBar(0, 0, 4)).toBe('[##]')
  })
})

describe('alerts, security, images, services, broadcasts', () => {
  it('lists a tab critical first, newest first', () => {
    const s = fromSnapshot(
      snapshot({
        alerts: [
          alertView({id: 'al_w', severity: 'warning', last_seen: '2026-01-10T11:59:59Z'}),
          alertView({id: 'al_old', last_seen: '2026-01-10T10:00:00Z'}),
          alertView({id: 'al_new', last_seen: '2026-01-10T11:00:00Z'}),
          alertView({id: 'al_r', state: 'resolved'}),
        ],
      }),
    )
    expect(alertsIn(s, 'open').map((a) => a.id)).toEqual(['al_new', 'al_old', 'al_w'])
    expect(alertsIn(s, 'resolved').map((a) => a.id)).toEqual(['al_r'])
  })

  it('grids certificate expiry per zone and collects unsigned images and critical findings from open alerts', () => {
    const days = (d: number) => new Date(NOW.getTime() + d * 86_400_000).toISOString()
    const s = fromSnapshot(
      snapshot({
        nodes: [
          fleetNode({id: 'CH-ZUG-01', cert_not_after: days(-1)}),
          fleetNode({id: 'CH-ZUG-02', cert_not_after: days(5)}),
          fleetNode({id: 'CH-ZUG-03', cert_not_after: days(8.5)}),
          fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS', cert_not_after: days(25)}),
          fleetNode({id: 'SG-MAS-02', zone: 'SG/MAS', cert_not_after: null}),
          fleetNode({id: 'SG-MAS-03', zone: 'SG/MAS', status: 'revoked', cert_not_after: days(-30)}),
        ],
        alerts: [
          alertView({id: 'al_u', rule: 'image-unsigned', subject: 'CH-ZUG-02', node_id: 'CH-ZUG-02', details: {track: 'mainnet', services: [{service: 'api', digest: 'sha256:abc'}]}}),
          alertView({id: 'al_reg', rule: 'image-unsigned', subject: 'registry:r@sha256:def', node_id: null, severity: 'warning', details: {digest: 'sha256:def'}}),
          alertView({id: 'al_s', rule: 'security-critical', subject: 'CH-ZUG-03', node_id: 'CH-ZUG-03', details: {findings: [{id: 'ssh-root', title: 'root login over SSH'}]}}),
          alertView({id: 'al_gone', rule: 'security-critical', state: 'resolved', details: {findings: [{id: 'x', title: 'old'}]}}),
        ],
      }),
    )
    const sec = security(s, NOW)
    expect(sec.certGrid.find((z) => z.zone === 'CH/FINMA')!.buckets).toMatchObject({expired: 1, '<7d': 1, '<10d': 1, ok: 0})
    expect(sec.certGrid.find((z) => z.zone === 'SG/MAS')!.buckets).toMatchObject({'<30d': 1, unknown: 1, expired: 0})
    expect(sec.expiring.map((e) => e.node_id)).toEqual(['CH-ZUG-01', 'CH-ZUG-02', 'CH-ZUG-03', 'SG-MAS-01'])
    expect(sec.unsigned.map((u) => [u.subject, u.digests])).toEqual([
      ['CH-ZUG-02', [{service: 'api', digest: 'sha256:abc'}]],
      ['registry:r@sha256:def', [{service: null, digest: 'sha256:def'}]],
    ])
    expect(sec.findings).toEqual([{node_id: 'CH-ZUG-03', findings: [{id: 'ssh-root', title: 'root login over SSH'}]}])
    expect([certBucket(null), certBucket(-1), certBucket(6), certBucket(9), certBucket(29), certBucket(30)]).toEqual(['unknown', 'expired', '<7d', '<10d', '<30d', 'ok'])
  })

  it('offers the live images of a node\'s track to upgrade to, and knows each track\'s next', () => {
    const imgs = [imageRow({version: 'v95.0', track: 'mainnet'}), imageRow({version: 'v96.0', track: 'mainnet', digest: 'sha256:c'}), imageRow({version: 'v97.0', track: 'mainnet', deprecated: {reason: 'bad'}}), imageRow({track: 'testnet'})]
    expect(upgradeCandidates(imgs, 'mainnet').map((i) => i.version)).toEqual(['v96.0', 'v95.0'])
    expect([nextTrack('devnet'), nextTrack('testnet'), nextTrack('mainnet')]).toEqual(['testnet', 'mainnet', null])
  })

  it('tells a node\'s services: digest from the stack or the unsigned alert, signature, health from the service-down alert', () => {
    const node = fleetNode({versions: {api: 'v96.0', settlement: 'v95.3', web: 'v1.0'}})
    const stack = {versions: {api: {version: 'v96.0', digest: 'sha256:aaa'}, settlement: {version: 'v95.4', digest: 'sha256:bbb'}, web: null}}
    const images = [imageRow({track: 'mainnet', digest: 'sha256:aaa'})]
    const alerts = [
      alertView({rule: 'image-unsigned', details: {services: [{service: 'web', digest: 'sha256:evil'}]}}),
      alertView({id: 'al_2', rule: 'service-down', details: {services: [{service: 'settlement', state: 'exited', health: 'none'}]}}),
    ]
    // An older HQ, whose detail carries no services.
    expect(serviceRows(node, {}, stack, images, alerts, NOW)).toEqual([
      {service: 'api', critical: null, state: null, version: 'v96.0', digest: 'sha256:aaa', signature: 'signed', health: 'ok'},
      {service: 'settlement', critical: null, state: null, version: 'v95.3', digest: null, signature: 'unknown', health: 'exited'},
      {service: 'web', critical: null, state: null, version: 'v1.0', digest: 'sha256:evil', signature: 'unsigned', health: 'ok'},
    ])
  })

  it('takes a node\'s services from HQ\'s detail when it has them: state, health, digest, signature', () => {
    const node = fleetNode({versions: {api: 'v96.0'}})
    const d = {
      services: [
        {name: 'api', critical: true, state: 'running', health: 'healthy' as const, digest: 'sha256:aaa', version: 'v96.0', signed: true, deprecated: false, image: 'jil/api'},
        {name: 'db', critical: false, state: 'running', health: 'none' as const, digest: 'sha256:ddd', version: 'v2', signed: false, deprecated: true, image: 'jil/db'},
        {name: 'cache', critical: false, state: 'exited', health: 'none' as const, digest: 'sha256:ccc', version: null, signed: false, deprecated: false, image: null},
        {name: 'worker', critical: false, state: 'missing', health: 'none' as const, digest: null, version: null, signed: false, deprecated: false, image: null},
      ],
    }
    // Nor the stack nor the alerts are asked: HQ knows.
    expect(serviceRows(node, d, null, [], [alertView({rule: 'service-down', details: {services: [{service: 'api', state: 'exited'}]}})], NOW)).toEqual([
      {service: 'api', critical: true, state: 'running', version: 'v96.0', digest: 'sha256:aaa', signature: 'signed', health: 'healthy'},
      {service: 'db', critical: false, state: 'running', version: 'v2', digest: 'sha256:ddd', signature: 'deprecated', health: '-'},
      {service: 'cache', critical: false, state: 'exited', version: null, digest: 'sha256:ccc', signature: 'unsigned', health: '-'},
      {service: 'worker', critical: false, state: 'missing', version: null, digest: null, signature: 'none', health: '-'},
    ])
  })

  it('lists each agent\'s last result: the stored report, or the heartbeat\'s newer summary', () => {
    const report = (agent: 'health' | 'security', at: string, o: {ok?: boolean; findings?: ('critical' | 'warning' | 'info')[]} = {}) => ({
      agent,
      node_id: 'CH-ZUG-01',
      started_at: at,
      finished_at: at,
      ok: o.ok ?? true,
      summary: `${agent} report`,
      findings: (o.findings ?? []).map((severity, i) => ({id: `f${i}`, severity, title: 't', evidence: 'e', remediation: 'r'})),
      details: {},
      received_at: at,
    })
    const rows = agentRows({
      reports: {health: report('health', '2026-01-10T11:59:00.000Z', {findings: ['warning', 'info']}), security: report('security', '2026-01-10T10:00:00.000Z', {findings: ['critical']})},
      agents: {
        health: {at: '2026-01-10T11:58:00.000Z', ok: true, summary: 'older summary', critical: 0, warning: 0},
        security: {at: '2026-01-10T11:00:00.000Z', ok: false, summary: 'security could not run', critical: 0, warning: 0},
        update: {at: '2026-01-10T11:30:00.000Z', ok: true, summary: 'up to date', critical: 0, warning: 0},
      },
    })
    expect(rows).toEqual([
      {agent: 'health', ok: true, at: '2026-01-10T11:59:00.000Z', summary: 'health report', critical: 0, warning: 1},
      {agent: 'security', ok: false, at: '2026-01-10T11:00:00.000Z', summary: 'security could not run', critical: 0, warning: 0},
      {agent: 'update', ok: true, at: '2026-01-10T11:30:00.000Z', summary: 'up to date', critical: 0, warning: 0},
    ])
    // Times written without milliseconds compare by time, not as text.
    const later = agentRows({reports: {health: report('health', '2026-01-10T12:00:00Z')}, agents: {health: {at: '2026-01-10T12:00:00.500Z', ok: false, summary: 'later run', critical: 1, warning: 0}}})
    expect(later).toEqual([{agent: 'health', ok: false, at: '2026-01-10T12:00:00.500Z', summary: 'later run', critical: 1, warning: 0}])
  })

  it('brings broadcast rows up to date from the streamed commands', () => {
    const rows = [
      {node_id: 'SG-MAS-01', command_id: 'cmd_2', status: 'pending', summary: '', error: null},
      {node_id: 'CH-ZUG-01', command_id: 'cmd_1', status: 'pending', summary: '', error: null},
      {node_id: 'AE-ADGM-01', command_id: null, status: 'refused', summary: 'no', error: {code: 'NODE_REVOKED', message: 'revoked'}},
    ]
    const commands = new Map([
      ['cmd_1', fleetCommand({id: 'cmd_1', status: 'succeeded', result: {ok: true, summary: 'refreshed: 5 services up to date'}})],
      ['cmd_2', fleetCommand({id: 'cmd_2', status: 'failed', result: {ok: false, summary: 'reboot refused', error: {code: 'NO_REBOOT', message: 'x'}}})],
    ])
    expect(broadcastResults(rows, commands)).toEqual([
      {node_id: 'AE-ADGM-01', command_id: null, status: 'refused', summary: 'NODE_REVOKED: revoked'},
      {node_id: 'CH-ZUG-01', command_id: 'cmd_1', status: 'succeeded', summary: 'refreshed: 5 services up to date'},
      {node_id: 'SG-MAS-01', command_id: 'cmd_2', status: 'failed', summary: 'reboot refused (NO_REBOOT)'},
    ])
  })
})
