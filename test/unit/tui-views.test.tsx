import chalk from 'chalk'
import {createRequire} from 'node:module'
import {render} from 'ink-testing-library'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import type {AlertView, SilenceRequest} from '../../src/shared/alerts.js'
import type {CommandTarget, FleetNode} from '../../src/shared/api.js'
import type {ActionState} from '../../src/tui/hooks/use-action.js'
import {alertsIn, CowMap, fromSnapshot, overview, security, ZONES, type ImageListRow} from '../../src/tui/model.js'
import {Alerts} from '../../src/tui/views/alerts.js'
import {Broadcast} from '../../src/tui/views/broadcast.js'
import {Help} from '../../src/tui/views/help.js'
import {Images} from '../../src/tui/views/images.js'
import {NodeDetail, type NodeAction} from '../../src/tui/views/node-detail.js'
import {fixedNodes, Nodes, type NodesFeed} from '../../src/tui/views/nodes.js'
import {Overview} from '../../src/tui/views/overview.js'
import {Security} from '../../src/tui/views/security.js'
import {alertView, eventually, fleetCommand, fleetNode, imageRow, KEY, nodeDetail, NOW, press, rolloutView, snapshot} from '../helpers/tui.js'

// ink colours through chalk, which finds no terminal under vitest and would drop every colour: force
// it on, so that a frame without escapes proves the view passed no colour (NO_COLOR), not chalk.
// The scheduler react-reconciler renders ink's root with (ink's dependency, one copy in node_modules).
const scheduler = createRequire(import.meta.url)('scheduler') as {
  unstable_scheduleCallback: (priority: number, task: () => void) => unknown
  unstable_NormalPriority: number
}

const chalkLevel = chalk.level
beforeAll(() => {
  chalk.level = 1
})
afterAll(() => {
  chalk.level = chalkLevel
})

// Colour escapes (foreground 30–37, 90–97, 256/true colour 38;…): bold and inverse are not colours.
const ESC = /\u001B\[(3[0-8]|9[0-7])[;m]/
const frames: {unmount: () => void}[] = []
afterEach(() => {
  for (const f of frames.splice(0)) f.unmount()
})
/** Renders a view; lastFrame() is its text (bold and colour stripped), raw() the frame as written. */
function mount(tree: Parameters<typeof render>[0]) {
  const r = render(tree)
  frames.push(r)
  return {...r, raw: () => r.lastFrame() ?? '', lastFrame: () => (r.lastFrame() ?? '').replace(/\u001B\[[0-9;]*m/g, '')}
}

const ago = (s: number) => new Date(NOW.getTime() - s * 1000).toISOString()
const plain = {width: 100, height: 20, colors: false}

const NODES: FleetNode[] = [
  fleetNode({id: 'CH-ZUG-01'}),
  fleetNode({id: 'CH-ZUG-02', last_heartbeat_at: ago(900)}),
  fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS', versions: {api: 'v97.1'}}),
  fleetNode({id: 'AE-ADGM-01', zone: 'AE/FSRA', status: 'paused', run_mode: 'paused'}),
]

const byId = (nodes: FleetNode[]) => fixedNodes(CowMap.of(nodes.map((n) => [n.id, n])))

/** The node ids in a Nodes frame, in order. */
function idsIn(frame: string | undefined): string[] {
  return [...(frame ?? '').matchAll(/^[> ] ([A-Z]{2}-[A-Z0-9]+-\d+)/gm)].map((m) => m[1]!)
}

describe('Nodes', () => {
  it('lists nodes with their columns and opens the selected one with Enter', async () => {
    const opened: string[] = []
    const r = mount(<Nodes {...plain} width={120} nodes={byId(NODES)} now={NOW} onOpen={(id) => opened.push(id)} />)
    const f = r.lastFrame()!
    for (const h of ['NODE', 'ZONE', 'STATUS', 'VERSION', 'CPU', 'MEM', 'DISK', 'HEARTBEAT', 'SYNC', 'CERT']) expect(f).toContain(h)
    expect(idsIn(f)).toEqual(['AE-ADGM-01', 'CH-ZUG-01', 'CH-ZUG-02', 'SG-MAS-01'])
    expect(f).toMatch(/CH-ZUG-02\s+CH\/FINMA\s+offline/)
    expect(f).toContain('4 of 4 nodes')
    await press(r.stdin, KEY.down, KEY.down, KEY.enter)
    expect(opened).toEqual(['CH-ZUG-02'])
  })

  it('filters with / by substring, zone: and status:, and Esc clears the filter', async () => {
    const r = mount(<Nodes {...plain} nodes={byId(NODES)} now={NOW} onOpen={() => {}} />)
    await press(r.stdin, '/', 'zug')
    expect(idsIn(r.lastFrame())).toEqual(['CH-ZUG-01', 'CH-ZUG-02'])
    expect(r.lastFrame()).toContain('/zug▏')
    await press(r.stdin, KEY.backspace, KEY.backspace, KEY.backspace, 'zone:SG/MAS', KEY.enter)
    expect(idsIn(r.lastFrame())).toEqual(['SG-MAS-01'])
    expect(r.lastFrame()).toContain('1 of 4 nodes')
    await press(r.stdin, '/', ' status:offline')
    expect(r.lastFrame()).toContain('no node matches the filter')
    await press(r.stdin, KEY.enter, KEY.esc)
    expect(idsIn(r.lastFrame())).toHaveLength(4)
    await press(r.stdin, '/', 'zone:CH/FINMA status:offline', KEY.enter)
    expect(idsIn(r.lastFrame())).toEqual(['CH-ZUG-02'])
    await press(r.stdin, '/', ' colour:red', KEY.enter)
    expect(r.lastFrame()).toContain('not understood: colour:red')
  })

  it('takes a filter typed or pasted in one go, Enter included', async () => {
    const r = mount(<Nodes {...plain} nodes={byId(NODES)} now={NOW} onOpen={() => {}} />)
    r.stdin.write('/zone:SG/MAS\r')
    await press(r.stdin)
    expect(idsIn(r.lastFrame())).toEqual(['SG-MAS-01'])
    expect(r.lastFrame()).not.toContain('▏')
    await press(r.stdin, KEY.esc, '/', 'ch-zug-0 status:offline\r')
    expect(idsIn(r.lastFrame())).toEqual(['CH-ZUG-02'])
  })

  it('acts on keys that arrive in one read one after another, each on what the one before drew', async () => {
    const opened: string[] = []
    const r = mount(<Nodes {...plain} nodes={byId(NODES)} now={NOW} onOpen={(id) => opened.push(id)} />)
    // A held arrow, then Enter: one terminal read.
    r.stdin.write(KEY.down + KEY.down + KEY.down + KEY.up + KEY.enter)
    // The five keys drain one per turn of the event loop: on a busy machine that takes more turns than press() waits.
    await eventually(() => opened.length > 0, 'Enter to open a node')
    expect(opened).toEqual(['CH-ZUG-02'])
  })

  it('acts on each key with what the one before drew while React\'s scheduler is busy', async () => {
    // React renders ink's root from scheduler tasks (setImmediate). A task that runs past the
    // scheduler's 5 ms slice makes it yield, and the render of the last key then comes after the
    // next timer: keys drained by timers would act on a stale screen (seen once in CI). A busy task
    // that keeps rescheduling itself makes that happen on every key.
    const opened: string[] = []
    let busyRuns = 0
    const busy = () => {
      const until = performance.now() + 8
      while (performance.now() < until);
      busyRuns++
      if (opened.length === 0 && busyRuns < 500) scheduler.unstable_scheduleCallback(scheduler.unstable_NormalPriority, busy)
    }
    const r = mount(<Nodes {...plain} nodes={byId(NODES)} now={NOW} onOpen={(id) => opened.push(id)} />)
    scheduler.unstable_scheduleCallback(scheduler.unstable_NormalPriority, busy)
    r.stdin.write(KEY.down + KEY.down + KEY.down + KEY.up + KEY.enter)
    await eventually(() => opened.length > 0, 'Enter to open a node', 10_000)
    expect(opened).toEqual(['CH-ZUG-02'])
    expect(busyRuns).toBeGreaterThan(1)
  })

  it('sorts with s (next column) and S (reverse)', async () => {
    const r = mount(<Nodes {...plain} nodes={byId(NODES)} now={NOW} onOpen={() => {}} />)
    await press(r.stdin, 's')
    expect(r.lastFrame()).toContain('sort: zone ↑')
    expect(idsIn(r.lastFrame())).toEqual(['AE-ADGM-01', 'CH-ZUG-01', 'CH-ZUG-02', 'SG-MAS-01'])
    await press(r.stdin, 's')
    expect(idsIn(r.lastFrame())).toEqual(['CH-ZUG-02', 'AE-ADGM-01', 'CH-ZUG-01', 'SG-MAS-01'])
    expect(r.lastFrame()).toContain('STATUS↑')
    await press(r.stdin, 'S')
    expect(r.lastFrame()).toContain('STATUS↓')
    // Ties stay in id order both ways, so rows do not swap places as heartbeats come in.
    expect(idsIn(r.lastFrame())).toEqual(['CH-ZUG-01', 'SG-MAS-01', 'AE-ADGM-01', 'CH-ZUG-02'])
    await press(r.stdin, 's', 'S')
    expect(idsIn(r.lastFrame())[0]).toBe('SG-MAS-01') // version ↓: v97.1 first
  })

  it('renders only the rows that fit, scrolling with the cursor, over 10,000 nodes', async () => {
    const many = Array.from({length: 10_000}, (_, i) => fleetNode({id: `CH-N${String(i).padStart(5, '0')}-01`}))
    const r = mount(<Nodes {...plain} height={10} nodes={byId(many)} now={NOW} onOpen={() => {}} />)
    expect(idsIn(r.lastFrame())).toEqual(['CH-N00000-01', 'CH-N00001-01', 'CH-N00002-01', 'CH-N00003-01', 'CH-N00004-01', 'CH-N00005-01', 'CH-N00006-01'])
    await press(r.stdin, ...Array<string>(8).fill(KEY.down))
    expect(idsIn(r.lastFrame())).toEqual(['CH-N00002-01', 'CH-N00003-01', 'CH-N00004-01', 'CH-N00005-01', 'CH-N00006-01', 'CH-N00007-01', 'CH-N00008-01'])
    expect(r.lastFrame()).toContain('> CH-N00008-01')
    await press(r.stdin, 'G')
    expect(idsIn(r.lastFrame()).at(-1)).toBe('CH-N09999-01')
  })

  it('shows each node\'s event sync: its lag when behind, ok when caught up, - when it reports none; sorts by it', async () => {
    const nodes = [
      fleetNode({id: 'CH-ZUG-01', sync: {lag_s: 3.2, caught_up: false, outbox_backlog: 0, gaps: 0}}),
      fleetNode({id: 'CH-ZUG-02', sync: {lag_s: 0.1, caught_up: true}}),
      fleetNode({id: 'CH-ZUG-03', sync: null}),
      fleetNode({id: 'CH-ZUG-04', sync: {lag_s: 600, caught_up: false}}),
    ]
    const r = mount(<Nodes {...plain} width={120} nodes={byId(nodes)} now={NOW} onOpen={() => {}} />)
    const f = r.lastFrame()!
    expect(f).toMatch(/CH-ZUG-01 .* 10s\s+3\.2s\s+20d/)
    expect(f).toMatch(/CH-ZUG-02 .* 10s\s+ok\s+20d/)
    expect(f).toMatch(/CH-ZUG-03 .* 10s\s+-\s+20d/)
    expect(f).toMatch(/CH-ZUG-04 .* 10s\s+10m\s+20d/)
    // s eight times: zone, status, version, cpu, mem, disk, heartbeat, sync; S: the worst lag first.
    await press(r.stdin, ...'ssssssss', 'S')
    expect(r.lastFrame()).toContain('sort: sync ↓')
    expect(idsIn(r.lastFrame())).toEqual(['CH-ZUG-04', 'CH-ZUG-01', 'CH-ZUG-02', 'CH-ZUG-03'])
  })

  it('follows the live nodes, re-rendering only when a row on screen or a count changes', async () => {
    const many = Array.from({length: 200}, (_, i) => fleetNode({id: `CH-N${String(i).padStart(5, '0')}-01`}))
    let map = CowMap.of(many.map((n) => [n.id, n] as const))
    const listeners = new Set<() => void>()
    const live: NodesFeed = {get: () => map, subscribe: (fn) => (listeners.add(fn), () => listeners.delete(fn))}
    const change = (...ns: FleetNode[]) => {
      map = map.with(ns.map((n) => [n.id, n] as const))
      for (const l of listeners) l()
    }
    const r = mount(<Nodes {...plain} height={10} nodes={live} now={NOW} onOpen={() => {}} />)
    await press(r.stdin)
    const frames = r.frames.length
    // A node far off screen changes: nothing to draw.
    change({...many[150]!, system: {...many[150]!.system!, cpu_percent: 50}})
    await press(r.stdin)
    expect(r.frames.length).toBe(frames)
    // A node on screen changes: its row is drawn again.
    change({...many[2]!, system: {...many[2]!.system!, cpu_percent: 77}})
    await press(r.stdin)
    expect(r.frames.length).toBeGreaterThan(frames)
    expect(r.lastFrame()).toMatch(/CH-N00002-01 .*77%/)
    // Sorted by CPU (descending), a node off screen that climbs to the top moves onto the screen.
    await press(r.stdin, 's', 's', 's', 's', 'S')
    expect(r.lastFrame()).toContain('sort: cpu ↓')
    expect(idsIn(r.lastFrame())[0]).toBe('CH-N00002-01')
    change({...many[199]!, system: {...many[199]!.system!, cpu_percent: 100}})
    await press(r.stdin)
    expect(idsIn(r.lastFrame()).slice(0, 2)).toEqual(['CH-N00199-01', 'CH-N00002-01'])
    // A node joins: the count says so.
    change(fleetNode({id: 'SG-NEW-01', zone: 'SG/MAS'}))
    await press(r.stdin)
    expect(r.lastFrame()).toContain('201 of 201 nodes')
  })

  it('drops low-value columns on a narrow terminal instead of wrapping', () => {
    const r = mount(<Nodes {...plain} width={80} nodes={byId(NODES)} now={NOW} onOpen={() => {}} />)
    const f = r.lastFrame()!
    expect(f).not.toContain('CPU')
    expect(f).not.toContain('MEM')
    expect(f).toContain('HEARTBEAT')
    for (const line of f.split('\n')) expect(line.length).toBeLessThanOrEqual(80)
    expect(idsIn(f)).toHaveLength(4)
  })

  it('colours the status, and nothing at all under NO_COLOR', () => {
    const coloured = mount(<Nodes {...plain} colors nodes={byId(NODES)} now={NOW} onOpen={() => {}} />).raw()
    expect(coloured).toMatch(ESC)
    const none = mount(<Nodes {...plain} colors={false} nodes={byId(NODES)} now={NOW} onOpen={() => {}} />).raw()
    expect(none).not.toMatch(ESC)
    // The selection still shows without colour.
    expect(none).toContain('> AE-ADGM-01')
  })
})

describe('NodeDetail', () => {
  const node = fleetNode({versions: {api: 'v96.0'}})
  const images: ImageListRow[] = [imageRow({track: 'mainnet', version: 'v96.1', digest: `sha256:${'c'.repeat(64)}`}), imageRow({track: 'testnet'})]
  const dg = (c: string) => `sha256:${c.repeat(64)}`
  /** What HQ's detail carries from the last heartbeat (an older HQ sends none of it). */
  const fromHeartbeat = {
    sync: {lag_s: 3.24, caught_up: false, outbox_backlog: 12, gaps: 0},
    services: [
      {name: 'api', critical: true, state: 'running', health: 'healthy' as const, digest: dg('d'), version: 'v96.0', signed: true, deprecated: false, image: 'jil/api'},
      {name: 'cache', critical: false, state: 'exited', health: 'none' as const, digest: dg('f'), version: 'v0.9', signed: false, deprecated: false, image: null},
      {name: 'db', critical: false, state: 'running', health: 'unhealthy' as const, digest: dg('e'), version: 'v2.1', signed: false, deprecated: true, image: 'jil/db'},
      {name: 'worker', critical: false, state: 'missing', health: 'none' as const, digest: null, version: null, signed: false, deprecated: false, image: null},
    ],
    containers: {total: 4, running: 3, healthy: 1, unhealthy: 1, exited: 1, restarting: 0, other: 0},
    agents: {
      health: {at: ago(60), ok: true, summary: 'an older run', critical: 0, warning: 0},
      security: {at: ago(120), ok: false, summary: '2 critical findings before the scan failed', critical: 1, warning: 2},
    },
    agent_version: '1.4.0',
    state: {desired: {run_mode: 'running', config_version: 2, sequence: 4}, applied: {run_mode: 'running', sequence: 5, config_version: 1, at: ago(10)}, in_sync: false},
    config: {desired_version: 2, applied_version: 1, desired: [{name: 'fees-ch', scope: 'zone' as const, version: 2, seq: 2, sha256: 'a'.repeat(64)}]},
  }
  function detailView(o: {readonly?: boolean; result?: ActionState; colors?: boolean; live?: boolean} = {}) {
    const actions: NodeAction[] = []
    let back = 0
    const summary = o.live ? '3/4 containers running; heartbeat sent' : '1/1 containers running; heartbeat sent'
    const d = nodeDetail(o.live ? {...node, sync: fromHeartbeat.sync} : node, {
      reports: {
        health: {agent: 'health', node_id: node.id, started_at: ago(30), finished_at: ago(29), ok: true, summary, findings: [], details: {containers: {total: 1, running: 1, healthy: 1, unhealthy: 0, exited: 0}}, received_at: ago(29)},
      },
      ...(o.live ? fromHeartbeat : {}),
    })
    d.stack = {track: 'mainnet', stack: null, versions: {api: {version: 'v96.0', digest: `sha256:${'d'.repeat(64)}`, repository: 'r/jil/api', pinned_by: null, pinned_at: null}}}
    const r = mount(
      <NodeDetail
        {...plain}
        colors={o.colors ?? false}
        nodeId={node.id}
        node={d.node}
        detail={d}
        loading={false}
        error={null}
        images={images}
        alerts={[]}
        now={NOW}
        readonly={o.readonly ?? false}
        result={o.result ?? null}
        onAction={(a) => actions.push(a)}
        onBack={() => back++}
      />,
    )
    return {r, actions, back: () => back}
  }

  it('shows the node, its services with state, health, digests and signature status, event sync, desired vs applied, the agents\' last results', () => {
    const f = detailView({live: true}).r.lastFrame()!
    expect(f).toContain('CH-ZUG-01  CH/FINMA  mainnet  operator Acme Nodes  active')
    expect(f).toContain('agent 1.4.0')
    expect(f).toMatch(/SERVICE\s+STATE\s+HEALTH\s+VERSION\s+DIGEST\s+SIGNATURE/)
    expect(f).toMatch(/api\*\s+running\s+healthy\s+v96\.0\s+sha256:dddddddddddd\s+signed/)
    expect(f).toMatch(/db\s+running\s+unhealthy\s+v2\.1\s+sha256:eeeeeeeeeeee\s+deprecated/)
    expect(f).toMatch(/cache\s+exited\s+-\s+v0\.9\s+sha256:ffffffffffff\s+unsigned/)
    expect(f).toMatch(/worker\s+missing\s+-\s+-\s+-\s+none/)
    expect(f).not.toContain('unknown')
    expect(f).toContain('event sync: lag 3.2s, behind, outbox backlog 12, gaps 0')
    expect(f).toContain('desired vs applied: run mode running/running, sequence 4/5, config v2/v1  NOT in sync')
    expect(f).toContain('containers: 4 total, 3 running, 1 healthy, 1 unhealthy, 1 exited')
    // The health agent's stored report, and the security agent's run the heartbeat summarised.
    expect(f).toMatch(/health\s+ok\s+2026-01-10T11:59:31\s+-\s+3\/4 containers running/)
    expect(f).toMatch(/security\s+FAILED\s+2026-01-10T11:58:00\s+1c 2w\s+2 critical findings before the scan failed/)
    expect(f).toContain('config: desired v2, applied v1: fees-ch v2')
    expect(f).toContain('certificate until 2026-01-30T12:00:00.000Z (20d left)')
    expect(f).toContain('p pause')
  })

  it('falls back to versions, the stack and alerts with an HQ that sends no services', () => {
    const f = detailView().r.lastFrame()!
    expect(f).toMatch(/api\s+-\s+ok\s+v96\.0\s+sha256:dddddddddddd\s+unknown/)
    expect(f).toContain('containers: 1 total, 1 running, 1 healthy')
    expect(f).toMatch(/health\s+ok\s+2026-01-10T11:59:31\s+-\s+1\/1 containers running/)
    expect(f).not.toContain('event sync')
  })

  it('asks before each action and acts only on y', async () => {
    const v = detailView()
    await press(v.r.stdin, 'p')
    expect(v.r.lastFrame()).toContain('Pause CH-ZUG-01: fail /healthz so traffic drains (services keep running)? [y/N]')
    await press(v.r.stdin, 'n')
    expect(v.actions).toEqual([])
    expect(v.r.lastFrame()).not.toContain('[y/N]')
    for (const k of ['p', 'r', 's', 't', 'b']) await press(v.r.stdin, k, 'y')
    expect(v.actions).toEqual([{kind: 'pause'}, {kind: 'resume'}, {kind: 'start'}, {kind: 'stop'}, {kind: 'rollback'}])
  })

  it('upgrades to a signed image of the node\'s track, chosen from a list, and revokes with a reason', async () => {
    const v = detailView()
    await press(v.r.stdin, 'u')
    expect(v.r.lastFrame()).toContain('Upgrade CH-ZUG-01 to: [jil/api v96.1]')
    expect(v.r.lastFrame()).not.toContain('jil/api v96.0') // the testnet image is not offered
    await press(v.r.stdin, KEY.enter)
    expect(v.r.lastFrame()).toContain('Upgrade CH-ZUG-01 to jil/api v96.1 (sha256:cccccccccccc)? [y/N]')
    await press(v.r.stdin, 'y')
    expect(v.actions).toEqual([{kind: 'upgrade', image: `jil/api@sha256:${'c'.repeat(64)}`}])
    await press(v.r.stdin, 'X', 'key', ' leaked')
    expect(v.r.lastFrame()).toContain('Revoke CH-ZUG-01 (permanent); reason: key leaked')
    await press(v.r.stdin, KEY.enter)
    expect(v.r.lastFrame()).toContain('Revoke CH-ZUG-01 for good ("key leaked")? It can never rejoin [y/N]')
    await press(v.r.stdin, 'y')
    expect(v.actions.at(-1)).toEqual({kind: 'revoke', reason: 'key leaked'})
  })

  it('takes a reason pasted with its Enter', async () => {
    const v = detailView()
    await press(v.r.stdin, 'X', 'disk stolen\r', 'y')
    expect(v.actions).toEqual([{kind: 'revoke', reason: 'disk stolen'}])
  })

  it('Esc cancels a dialog first, then goes back', async () => {
    const v = detailView()
    await press(v.r.stdin, 'X', KEY.esc)
    expect(v.back()).toBe(0)
    expect(v.r.lastFrame()).not.toContain('Revoke')
    await press(v.r.stdin, KEY.esc)
    expect(v.back()).toBe(1)
  })

  it('read-only hides and ignores every action', async () => {
    const v = detailView({readonly: true})
    expect(v.r.lastFrame()).toContain('read-only: actions hidden')
    expect(v.r.lastFrame()).not.toContain('p pause')
    await press(v.r.stdin, 'p', 'y', 'X', 'u')
    expect(v.actions).toEqual([])
    expect(v.r.lastFrame()).not.toContain('[y/N]')
  })

  it('shows the result line, a 403 as such', () => {
    expect(detailView({result: {phase: 'done', label: 'pause CH-ZUG-01', text: 'CH-ZUG-01 paused'}}).r.lastFrame()).toContain('✓ CH-ZUG-01 paused')
    const f = detailView({result: {phase: 'failed', label: 'pause CH-ZUG-01', code: 'FORBIDDEN', status: 403, text: 'role viewer lacks the permission nodes:operate'}}).r.lastFrame()!
    expect(f).toContain('✗ pause CH-ZUG-01: FORBIDDEN (403 forbidden): role viewer lacks the permission nodes:operate')
  })

  it('has no colour under NO_COLOR', () => {
    expect(detailView({colors: true}).r.raw()).toMatch(ESC)
    expect(detailView({colors: false}).r.raw()).not.toMatch(ESC)
  })
})

describe('Overview', () => {
  const state = fromSnapshot(
    snapshot({
      nodes: [...NODES, fleetNode({id: 'US-NYC-01', zone: 'US/FINCEN', status: 'revoked'})],
      alerts: [alertView(), alertView({id: 'al_2', severity: 'warning', rule: 'sync-lag', details: {lag_s: 95}})],
      rollouts: [rolloutView()],
    }),
  )
  it('shows counts by status, all 13 zones, versions, sync lag, alerts and rollouts with a progress bar', () => {
    const f = mount(<Overview {...plain} height={40} data={overview(state, NOW)} />).lastFrame()!
    expect(f).toContain('5 nodes   healthy 2  degraded 0  offline 1  paused 1  revoked 1')
    expect(f).toContain('alerts: 1 critical  1 warning  0 acked')
    expect(f).toContain('event sync: no node up reports it  (1 sync-lag alert)')
    for (const z of ZONES) expect(f).toContain(z)
    expect(f).toMatch(/api\s+v95\.3 x3\s+v97\.1 x1/)
    expect(f).toMatch(/jil\/api\s+v96\.0\s+→ CH\/FINMA\s+\[#+\.+\] 1\/4 running/)
  })
  it('shows the fleet\'s median and worst sync lag from the nodes\' heartbeats', () => {
    const synced = fromSnapshot(
      snapshot({
        nodes: [
          fleetNode({id: 'CH-ZUG-01', sync: {lag_s: 0.3, caught_up: true}}),
          fleetNode({id: 'CH-ZUG-02', sync: {lag_s: 0.5, caught_up: true}}),
          fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS', sync: {lag_s: 95, caught_up: false}}),
        ],
      }),
    )
    expect(mount(<Overview {...plain} height={40} data={overview(synced, NOW)} />).lastFrame()).toContain('event sync: median 0.5s, max 1m (SG-MAS-01), 1 of 3 nodes behind')
    const caughtUp = fromSnapshot(snapshot({nodes: [fleetNode({sync: {lag_s: 0.2, caught_up: true}})]}))
    expect(mount(<Overview {...plain} height={40} data={overview(caughtUp, NOW)} />).lastFrame()).toContain('event sync: median 0.2s, max 0.2s (CH-ZUG-01), all 1 caught up')
  })

  it('keeps the telling zone columns on a narrow terminal, with no colour under NO_COLOR', () => {
    const r = mount(<Overview {...plain} width={80} height={40} data={overview(state, NOW)} />)
    expect(r.lastFrame()).toContain('OFFLINE')
    expect(r.lastFrame()).not.toContain('UPGRADING')
    for (const line of r.lastFrame().split('\n')) expect(line.length).toBeLessThanOrEqual(80)
    expect(r.raw()).not.toMatch(ESC)
    expect(mount(<Overview {...plain} colors height={40} data={overview(state, NOW)} />).raw()).toMatch(ESC)
  })
})

describe('Images', () => {
  const images = [imageRow({track: 'devnet', version: 'v97.0', digest: `sha256:${'e'.repeat(64)}`, approvals: 0, approvers: []}), imageRow({track: 'testnet'}), imageRow({track: 'mainnet', version: 'v95.0', digest: `sha256:${'f'.repeat(64)}`})]
  function view(readonly = false) {
    const calls: [string, string, string][] = []
    const r = mount(
      <Images
        {...plain}
        images={images}
        readonly={readonly}
        result={null}
        onApprove={(i, t) => calls.push(['approve', i.version, t])}
        onPromote={(i, t) => calls.push(['promote', i.version, t])}
      />,
    )
    return {r, calls}
  }

  it('lists tracks, versions, digests and approvals; approves and promotes to the next track after confirmation', async () => {
    const v = view()
    const f = v.r.lastFrame()!
    expect(f).toMatch(/devnet\s+jil\/api\s+v97\.0\s+sha256:eeeeeeeeeeee\s+0\s+-\s+live/)
    expect(f).toMatch(/testnet\s+jil\/api\s+v96\.0\s+sha256:bbbbbbbbbbbb\s+1\s+bob/)
    await press(v.r.stdin, 'a')
    expect(v.r.lastFrame()).toContain('Approve jil/api v97.0 (sha256:eeeeeeeeeeee) for testnet, signed with your key? [y/N]')
    await press(v.r.stdin, 'y', KEY.down, 'p')
    expect(v.r.lastFrame()).toContain('Promote jil/api v96.0 from testnet to mainnet? [y/N]')
    await press(v.r.stdin, 'y', KEY.down, 'p', 'a')
    expect(v.calls).toEqual([
      ['approve', 'v97.0', 'testnet'],
      ['promote', 'v96.0', 'mainnet'],
    ])
  })

  it('read-only hides approve and promote', async () => {
    const v = view(true)
    expect(v.r.lastFrame()).toContain('read-only: actions hidden')
    await press(v.r.stdin, 'a', 'y', 'p', 'y')
    expect(v.calls).toEqual([])
  })
})

describe('Alerts', () => {
  const all = fromSnapshot(
    snapshot({
      alerts: [
        alertView(),
        alertView({id: 'al_acked', state: 'acked', acked_by: 'bob', rule: 'cert-expiring', summary: 'CH-ZUG-01: its certificate expires in 8d'}),
        alertView({id: 'al_resolved', state: 'resolved', rule: 'heartbeat-stale'}),
      ],
    }),
  )
  const tabs = {open: alertsIn(all, 'open'), acked: alertsIn(all, 'acked'), resolved: alertsIn(all, 'resolved')}
  function view(readonly = false) {
    const acks: AlertView[] = []
    const silences: SilenceRequest[] = []
    const r = mount(<Alerts {...plain} alerts={tabs} readonly={readonly} result={null} onAck={(a) => acks.push(a)} onSilence={(s) => silences.push(s)} />)
    return {r, acks, silences}
  }

  it('switches open/acked/resolved with Tab', async () => {
    const v = view()
    expect(v.r.lastFrame()).toContain('[open 1]  acked 1   resolved 1')
    expect(v.r.lastFrame()).toMatch(/critical\s+disk-critical\s+CH-ZUG-01/)
    await press(v.r.stdin, KEY.tab)
    expect(v.r.lastFrame()).toContain('cert-expiring')
    expect(v.r.lastFrame()).not.toContain('disk-critical')
    await press(v.r.stdin, KEY.tab)
    expect(v.r.lastFrame()).toContain('heartbeat-stale')
  })

  it('acks after confirmation, and silences for a chosen time, scope and reason', async () => {
    const v = view()
    await press(v.r.stdin, 'a')
    expect(v.r.lastFrame()).toContain('Ack al_00000000000000000001 (disk-critical CH-ZUG-01): you are on it? [y/N]')
    await press(v.r.stdin, 'y')
    expect(v.acks.map((a) => a.id)).toEqual(['al_00000000000000000001'])
    await press(v.r.stdin, 'x')
    expect(v.r.lastFrame()).toContain('Silence disk-critical for: [1h]  4h   24h   7d')
    await press(v.r.stdin, KEY.right, KEY.enter)
    expect(v.r.lastFrame()).toContain('Silence disk-critical for 4h: [on CH-ZUG-01]  on every node')
    await press(v.r.stdin, KEY.enter, 'disk swap tonight', KEY.enter)
    expect(v.silences).toEqual([{rule: 'disk-critical', node_id: 'CH-ZUG-01', for_s: 4 * 3600, reason: 'disk swap tonight'}])
  })

  it('read-only offers neither', async () => {
    const v = view(true)
    expect(v.r.lastFrame()).not.toContain('a ack')
    await press(v.r.stdin, 'a', 'y', 'x')
    expect(v.acks).toEqual([])
    expect(v.r.lastFrame()).not.toContain('Silence')
  })
})

describe('Security', () => {
  it('shows the certificate grid, the certificates expiring first, unsigned images and critical findings', () => {
    const s = fromSnapshot(
      snapshot({
        nodes: [fleetNode({id: 'CH-ZUG-01', cert_not_after: new Date(NOW.getTime() + 3 * 86_400_000).toISOString()}), fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS'})],
        alerts: [
          alertView({rule: 'image-unsigned', summary: 'CH-ZUG-01: api runs sha256:0badc0ffee00, not signed for mainnet', details: {services: [{service: 'api', digest: 'sha256:0bad'}]}}),
          alertView({id: 'al_2', rule: 'security-critical', summary: 'x', details: {findings: [{id: 'ssh', title: 'root login over SSH'}]}}),
        ],
      }),
    )
    const f = mount(<Security {...plain} height={40} data={security(s, NOW)} />).lastFrame()!
    expect(f).toMatch(/ZONE\s+expired\s+<7d\s+<10d\s+<30d\s+ok\s+unknown/)
    expect(f).toMatch(/CH\/FINMA\s+·\s+1\s+·\s+·\s+·\s+·/)
    expect(f).toMatch(/SG\/MAS\s+·\s+·\s+·\s+1\s+·\s+·/)
    expect(f).toContain('CH-ZUG-01      CH/FINMA   3d left')
    expect(f).toContain('api runs sha256:0badc0ffee00, not signed for mainnet')
    expect(f).toContain('CH-ZUG-01      root login over SSH')
    for (const z of ZONES) expect(f).toContain(z)
  })
})

describe('Broadcast', () => {
  function view(o: {readonly?: boolean; sent?: Parameters<typeof Broadcast>[0]['sent']; commands?: Parameters<typeof Broadcast>[0]['commands']} = {}) {
    const sends: [string, CommandTarget][] = []
    const r = mount(
      <Broadcast {...plain} zones={[...ZONES]} sent={o.sent ?? null} commands={o.commands ?? new Map()} readonly={o.readonly ?? false} result={null} onSend={(c, t) => sends.push([c, t])} />,
    )
    return {r, sends}
  }

  it('sends a chosen command to all, a zone or a node, after confirmation', async () => {
    const v = view()
    expect(v.r.lastFrame()).toContain('[refresh]')
    await press(v.r.stdin, KEY.enter, 'y')
    await press(v.r.stdin, KEY.right, KEY.tab, KEY.down, KEY.enter)
    expect(v.r.lastFrame()).toContain('Send cycle to every node of AE/FSRA? [y/N]')
    await press(v.r.stdin, 'y')
    await press(v.r.stdin, KEY.right, KEY.tab, 'n', 'sg-mas-01', KEY.enter)
    expect(v.r.lastFrame()).toContain('node SG-MAS-01')
    await press(v.r.stdin, KEY.enter, 'y')
    expect(v.sends).toEqual([
      ['refresh', {all: true}],
      ['cycle', {zone: 'AE/FSRA'}],
      ['pause', {node: 'SG-MAS-01'}],
    ])
  })

  it('shows each node\'s answer as the commands stream in', () => {
    const sent = {
      command: 'refresh' as const,
      target: 'all',
      rows: [
        {node_id: 'CH-ZUG-01', command_id: 'cmd_1', status: 'pending' as const, summary: '', error: null},
        {node_id: 'SG-MAS-01', command_id: 'cmd_2', status: 'pending' as const, summary: '', error: null},
      ],
    }
    const commands = new Map([['cmd_1', fleetCommand({id: 'cmd_1', status: 'succeeded', result: {ok: true, summary: 'reconciled: 5 up to date'}})]])
    const f = view({sent, commands}).r.lastFrame()!
    expect(f).toContain('refresh → all: 1/2 succeeded')
    expect(f).toMatch(/CH-ZUG-01\s+succeeded\s+reconciled: 5 up to date/)
    expect(f).toMatch(/SG-MAS-01\s+pending/)
  })

  it('read-only hides the form', async () => {
    const v = view({readonly: true})
    expect(v.r.lastFrame()).toContain('read-only: broadcasting is hidden')
    await press(v.r.stdin, KEY.enter, 'y')
    expect(v.sends).toEqual([])
  })
})

describe('Help', () => {
  it('lists the keys, and says that a read-only session hides actions', () => {
    expect(mount(<Help {...plain} readonly={false} />).lastFrame()).toContain('s start, t stop, p pause')
    const ro = mount(<Help {...plain} readonly />).lastFrame()!
    expect(ro).toContain('read-only: every action is hidden')
    expect(ro).not.toContain('p pause')
  })
})
