import {Text} from 'ink'
import {render} from 'ink-testing-library'
import {useEffect} from 'react'
import {afterEach, describe, expect, it} from 'vitest'

import {ManualClock} from '../../src/shared/clock.js'
import {JilError} from '../../src/shared/errors.js'
import {backoffMs, type Feed, type FeedOptions} from '../../src/tui/hooks/feed.js'
import {useAction} from '../../src/tui/hooks/use-action.js'
import {shallowEqual, useFeedSelector, useFeedStore, useFleet} from '../../src/tui/hooks/use-fleet.js'
import {useNodeDetail} from '../../src/tui/hooks/use-node-detail.js'
import type {FleetSource} from '../../src/tui/source.js'
import {alertView, eventually, fakeSource, fleetNode, NOW, snapshot, tick} from '../helpers/tui.js'

let cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups) c()
  cleanups = []
})

/** The smallest component that uses the hook: it records every feed it renders. */
function Harness({source, opts, seen}: {source: FleetSource; opts: FeedOptions; seen: Feed[]}) {
  const feed = useFleet(source, opts)
  seen.push(feed)
  return <Text>{`${feed.phase} nodes=${feed.fleet.nodes.size} since=${feed.since?.toISOString() ?? '-'} error=${feed.error ?? '-'}`}</Text>
}

function mount(source: FleetSource, opts: FeedOptions = {}) {
  const seen: Feed[] = []
  const r = render(<Harness source={source} opts={{throttleMs: 0, ...opts}} seen={seen} />)
  cleanups.push(() => r.unmount())
  return {...r, seen, last: () => seen.at(-1)!}
}

/** A wait the test releases by hand, recording the delays asked for. */
function manualWait() {
  const delays: number[] = []
  const pending: (() => void)[] = []
  return {
    delays,
    release: () => pending.shift()!(),
    wait: (ms: number, signal: AbortSignal) =>
      new Promise<void>((resolve, reject) => {
        delays.push(ms)
        pending.push(resolve)
        signal.addEventListener('abort', () => reject(signal.reason), {once: true})
      }),
  }
}

describe('useFleet', () => {
  it('loads the snapshot after ready, then applies events; events before ready are not applied', async () => {
    const source = fakeSource({snap: snapshot({nodes: [fleetNode({id: 'CH-ZUG-01'}), fleetNode({id: 'CH-ZUG-02'})]})})
    const h = mount(source)
    expect(h.lastFrame()).toContain('connecting nodes=0')
    await eventually(() => source.channels.length === 1, 'a subscription')
    source.channels[0]!.push({type: 'nodes', nodes: [fleetNode({id: 'XX-EARLY-01'})]})
    await tick(5)
    expect(source.snapshots).toBe(0)
    source.channels[0]!.push({type: 'ready', at: NOW.toISOString()})
    await eventually(() => h.lastFrame()!.includes('live nodes=2'), 'the snapshot')
    source.channels[0]!.push({type: 'nodes', nodes: [fleetNode({id: 'CH-ZUG-03'}), fleetNode({id: 'CH-ZUG-01', status: 'paused'})]})
    await eventually(() => h.lastFrame()!.includes('live nodes=3'), 'the event')
    expect(h.last().fleet.nodes.get('CH-ZUG-01')!.status).toBe('paused')
    expect(h.last().fleet.nodes.has('XX-EARLY-01')).toBe(false)
  })

  it('applies events that arrive while the snapshot loads on top of it', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const source = fakeSource({snap: snapshot({nodes: [fleetNode({id: 'CH-ZUG-01', run_mode: 'running'})]})})
    const loadSnapshot = source.snapshot.bind(source)
    source.snapshot = async () => {
      await gate
      return loadSnapshot()
    }
    const h = mount(source)
    await eventually(() => source.channels.length === 1, 'a subscription')
    source.channels[0]!.push({type: 'ready', at: NOW.toISOString()}, {type: 'nodes', nodes: [fleetNode({id: 'CH-ZUG-01', status: 'paused', run_mode: 'paused'}), fleetNode({id: 'SG-MAS-01'})]})
    await tick(5)
    expect(h.lastFrame()).toContain('connecting')
    release()
    await eventually(() => h.lastFrame()!.includes('live nodes=2'), 'snapshot and event')
    expect(h.last().fleet.nodes.get('CH-ZUG-01')!.run_mode).toBe('paused')
  })

  it('marks the feed stale when the stream drops, reconnects with backoff, and is live again after the next ready', async () => {
    const clock = new ManualClock(NOW)
    const w = manualWait()
    const source = fakeSource({snap: snapshot({nodes: [fleetNode()]})})
    const h = mount(source, {clock, wait: w.wait, backoff: {initialMs: 500, maxMs: 4000}})
    await eventually(() => source.channels.length === 1, 'a subscription')
    source.channels[0]!.push({type: 'ready', at: NOW.toISOString()})
    await eventually(() => h.lastFrame()!.includes('live'), 'live')

    clock.advance(60_000)
    const droppedAt = clock.now().toISOString()
    source.channels[0]!.end()
    await eventually(() => h.lastFrame()!.includes(`stale nodes=1 since=${droppedAt}`), 'the stale marker')
    expect(h.last().stale).toBe(true)
    expect(h.last().error).toBe('the live stream ended')
    expect(w.delays).toEqual([500])

    // A failed reconnect keeps the time the feed went stale and waits longer.
    clock.advance(1000)
    w.release()
    await eventually(() => source.channels.length === 2, 'a reconnect')
    source.channels[1]!.fail(new JilError('HQ_UNREACHABLE', 'cannot reach HQ at https://hq.test:8443 (ECONNREFUSED)'))
    await eventually(() => w.delays.length === 2, 'a second wait')
    expect(w.delays).toEqual([500, 1000])
    await eventually(() => h.lastFrame()!.includes('ECONNREFUSED'), 'the error')
    expect(h.last().since!.toISOString()).toBe(droppedAt)

    w.release()
    await eventually(() => source.channels.length === 3, 'another reconnect')
    source.channels[2]!.push({type: 'ready', at: NOW.toISOString()})
    await eventually(() => h.lastFrame()!.includes('live nodes=1 since=- error=-'), 'live again')
    expect(source.snapshots).toBe(2)
    expect(h.last().reconnects).toBe(2)

    // After a good connection the backoff starts over.
    source.channels[2]!.end()
    await eventually(() => w.delays.length === 3, 'a third wait')
    expect(w.delays[2]).toBe(500)
  })

  it('caps the backoff', () => {
    expect([0, 1, 2, 3, 4, 5, 40].map((a) => backoffMs(a, {initialMs: 500, maxMs: 4000}))).toEqual([500, 1000, 2000, 4000, 4000, 4000, 4000])
  })

  it('throttles re-renders: a burst of a thousand heartbeats is one update', async () => {
    const source = fakeSource({snap: snapshot()})
    const h = mount(source, {throttleMs: 100})
    await eventually(() => source.channels.length === 1, 'a subscription')
    source.channels[0]!.push({type: 'ready', at: NOW.toISOString()})
    await eventually(() => h.lastFrame()!.includes('live'), 'live')
    const before = new Set(h.seen).size
    source.channels[0]!.push(...Array.from({length: 1000}, (_, i) => ({type: 'nodes' as const, nodes: [fleetNode({id: `CH-N${String(i).padStart(4, '0')}-01`})]})))
    await eventually(() => h.lastFrame()!.includes('nodes=1000'), 'the burst applied')
    await tick(150)
    // Distinct feeds rendered: the burst arrived within one throttle window, so one update carries it all.
    expect(new Set(h.seen).size - before).toBe(1)
  })

  it('throttles a steady stream to at most one update per throttle window', async () => {
    const source = fakeSource({snap: snapshot()})
    const h = mount(source, {throttleMs: 100})
    await eventually(() => source.channels.length === 1, 'a subscription')
    source.channels[0]!.push({type: 'ready', at: NOW.toISOString()})
    await eventually(() => h.lastFrame()!.includes('live'), 'live')
    const before = new Set(h.seen).size
    const started = performance.now()
    for (let i = 0; i < 60; i++) {
      source.channels[0]!.push({type: 'nodes', nodes: [fleetNode({id: `CH-N${String(i).padStart(4, '0')}-01`})]})
      await tick(5)
    }
    await eventually(() => h.lastFrame()!.includes('nodes=60'), 'all applied')
    const windows = Math.ceil((performance.now() - started) / 100)
    // 60 events over several windows: never more than one update per window (plus the trailing one).
    expect(new Set(h.seen).size - before).toBeLessThanOrEqual(windows + 1)
    expect(new Set(h.seen).size - before).toBeLessThan(60)
  })

  it('closes the stream when the component goes', async () => {
    const source = fakeSource()
    const h = mount(source)
    await eventually(() => source.channels.length === 1, 'a subscription')
    h.unmount()
    expect(source.channels[0]!.signal.aborted).toBe(true)
  })
})

/** Selects the phase and the alert count: renders are counted in `renders`. */
function SelectorHarness({source, renders}: {source: FleetSource; renders: string[]}) {
  const store = useFeedStore(source, {throttleMs: 0})
  const part = useFeedSelector(store, (f) => ({phase: f.phase, alerts: f.fleet.alerts.size}), shallowEqual)
  renders.push(`${part.phase} alerts=${part.alerts}`)
  return <Text>{`${part.phase} alerts=${part.alerts}`}</Text>
}

describe('useFeedSelector', () => {
  it('re-renders a component when its part of the feed changes, not on every update', async () => {
    const source = fakeSource({snap: snapshot({nodes: [fleetNode()]})})
    const renders: string[] = []
    const r = render(<SelectorHarness source={source} renders={renders} />)
    cleanups.push(() => r.unmount())
    await eventually(() => source.channels.length === 1, 'a subscription')
    source.channels[0]!.push({type: 'ready', at: NOW.toISOString()})
    await eventually(() => r.lastFrame() === 'live alerts=0', 'live')
    const before = renders.length
    // Heartbeats: the feed changes, the selected part does not.
    for (let i = 0; i < 5; i++) {
      source.channels[0]!.push({type: 'nodes', nodes: [fleetNode({id: `CH-N${i}-01`})]})
      await tick(5)
    }
    await tick(20)
    expect(renders.length).toBe(before)
    source.channels[0]!.push({type: 'alerts', alerts: [alertView()]})
    await eventually(() => r.lastFrame() === 'live alerts=1', 'the alert')
    expect(renders.slice(before)).toEqual(['live alerts=1'])
  })
})

function DetailHarness({source, id, changeKey}: {source: FleetSource; id: string | null; changeKey: string}) {
  const d = useNodeDetail(source, id, changeKey)
  return <Text>{d.loading ? 'loading' : d.error ? `error ${d.error}` : d.detail ? `detail ${d.detail.node.id} ${d.detail.node.run_mode}` : 'none'}</Text>
}

describe('useNodeDetail', () => {
  it('loads on open and again when the node\'s row changes, not otherwise', async () => {
    let mode = 'running'
    const source = fakeSource()
    source.nodeDetail = async (id) => {
      source.calls.push(['nodeDetail', id])
      const n = fleetNode({id, run_mode: mode})
      return {node: {...n, reports: {}, state: {desired: {run_mode: mode, config_version: 0, sequence: 1}, applied: null, in_sync: null}, config: {desired_version: 0, applied_version: null, desired: []}}, stack: null}
    }
    const r = render(<DetailHarness source={source} id="CH-ZUG-01" changeKey="a" />)
    cleanups.push(() => r.unmount())
    await eventually(() => r.lastFrame() === 'detail CH-ZUG-01 running', 'the detail')
    r.rerender(<DetailHarness source={source} id="CH-ZUG-01" changeKey="a" />)
    await tick(5)
    expect(source.calls.filter((c) => c[0] === 'nodeDetail')).toHaveLength(1)
    mode = 'paused'
    r.rerender(<DetailHarness source={source} id="CH-ZUG-01" changeKey="b" />)
    await eventually(() => r.lastFrame() === 'detail CH-ZUG-01 paused', 'the new detail')
    expect(source.calls.filter((c) => c[0] === 'nodeDetail')).toHaveLength(2)
  })

  it('shows why it could not load', async () => {
    const source = fakeSource({nodeDetail: async () => Promise.reject(new JilError('NODE_UNKNOWN', 'no node XX-YY-01', {status: 404}))})
    const r = render(<DetailHarness source={source} id="XX-YY-01" changeKey="" />)
    cleanups.push(() => r.unmount())
    await eventually(() => r.lastFrame() === 'error no node XX-YY-01', 'the error')
  })
})

function ActionHarness({fn}: {fn: () => Promise<string>}) {
  const a = useAction()
  useEffect(() => {
    void a.run('pause CH-ZUG-01', fn)
  }, [])
  return <Text>{a.state === null ? 'idle' : a.state.phase === 'failed' ? `failed ${a.state.code} ${a.state.status} ${a.state.text}` : a.state.phase === 'done' ? `done ${a.state.text}` : 'running'}</Text>
}

describe('useAction', () => {
  it('keeps the result line of a done action, and a refusal with HQ\'s code and status', async () => {
    const ok = render(<ActionHarness fn={async () => 'CH-ZUG-01 paused'} />)
    cleanups.push(() => ok.unmount())
    await eventually(() => ok.lastFrame() === 'done CH-ZUG-01 paused', 'done')
    const refused = render(
      <ActionHarness fn={async () => Promise.reject(new JilError('FORBIDDEN', 'role viewer lacks the permission nodes:operate', {status: 403, hint: 'ask an admin'}))} />,
    )
    cleanups.push(() => refused.unmount())
    await eventually(() => refused.lastFrame() === 'failed FORBIDDEN 403 role viewer lacks the permission nodes:operate (ask an admin)', 'refused')
  })
})
