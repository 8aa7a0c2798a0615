// `jil top` under load: a fleet of 10,000 nodes (13 zones, three tracks, five services each) and 100
// heartbeats per second streaming through the whole dashboard as it runs — the feed (model + hooks,
// throttled to 10 updates/s) and ink rendering the App into a terminal of fixed size (a fake stdout,
// 120×40). Per view (Nodes sorted by heartbeat age, where every heartbeat moves a row to the top;
// Nodes sorted by id, where most heartbeats touch no row on screen; Overview):
//   - frame: from what caused a frame (an update of the feed, or the once-a-second clock that ages
//     every row) until ink has rendered it (goal < 16 ms), in wall time and in CPU time (the wall
//     time includes waiting for a core when other work shares the machine). Frames whose cause came
//     within ink's 33 ms throttle of the frame before wait for it by design: they are counted apart
//     (held), with their latency, and left out of the frame figures, which would otherwise measure
//     the throttle. ink's own time per render (layout, output, write) is reported too. An update
//     that changes nothing on screen causes no frame at all: it is counted as skipped (none drawn
//     within ink's throttle);
//   - the process's CPU time (feed, React, ink, GC and the bench's own heartbeat generator);
//   - while streaming, how long a key (↓) takes to reach the screen;
//   - memory (RSS, heap) at the end and at peak.
//
//   npm run bench -- top [--nodes N] [--rate HEARTBEATS_PER_S] [--secs S] [--only nodes|nodes_by_id|overview]
//
// React runs its production build, as `jil top` does (NODE_ENV=production unless set; the bench
// restarts itself with it when needed, since react reads it when first loaded).
import {spawnSync} from 'node:child_process'

if (process.env.NODE_ENV === undefined) {
  const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], {stdio: 'inherit', env: {...process.env, NODE_ENV: 'production'}})
  process.exit(r.status ?? 1)
}

import {render} from 'ink'
import {createElement} from 'react'

import type {FleetNode} from '../src/shared/api.js'
import {systemClock, type Clock} from '../src/shared/clock.js'
import type {FleetEvent} from '../src/shared/fleet-events.js'
import {App, type ViewName} from '../src/tui/app.js'
import {ZONES, type FleetSnapshot} from '../src/tui/model.js'
import type {FleetSource} from '../src/tui/source.js'
import {EventChannel, FakeStdin, FakeStdout, KEY} from '../test/helpers/tui.js'
import {opt} from './lib/args.js'

const BENCH = 'top'
const NODES = opt('nodes', 10_000)
const RATE = opt('rate', 100)
const SECS = opt('secs', 10)
const ONLY = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined
const COLUMNS = 120
const ROWS = 40

function emit(metric: string, value: number, unit: string): void {
  process.stdout.write(JSON.stringify({bench: BENCH, metric, value: Math.round(value * 100) / 100, unit}) + '\n')
}
const note = (s: string): void => void process.stderr.write(`${BENCH}: ${s}\n`)
const pct = (xs: number[], p: number): number => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]! : NaN)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const mib = (b: number) => b / 1024 / 1024

const SERVICES = ['api', 'settlement', 'ledger', 'gateway', 'indexer']
const TRACKS = ['devnet', 'testnet', 'mainnet']

function makeNode(i: number, now: Date): FleetNode {
  const zone = ZONES[i % ZONES.length]!
  const v = i % 10 === 0 ? 'v96.0' : 'v95.3'
  return {
    id: `${zone.slice(0, 2)}-N${String(i).padStart(5, '0')}-01`,
    zone,
    operator: `Operator ${i % 40}`,
    track: TRACKS[i % 3]!,
    status: i % 50 === 0 ? 'degraded' : i % 97 === 0 ? 'paused' : 'active',
    run_mode: i % 97 === 0 ? 'paused' : 'running',
    joined_at: '2026-01-01T00:00:00Z',
    last_heartbeat_at: new Date(now.getTime() - (i % 60) * 1000).toISOString(),
    heartbeat_age_s: i % 60,
    versions: Object.fromEntries(SERVICES.map((s) => [s, v])),
    cert_not_after: new Date(now.getTime() + ((i % 30) + 1) * 86_400_000).toISOString(),
    system: {cpu_percent: i % 100, load1: 0.5, memory_used_bytes: (i % 16) * 1e9, memory_total_bytes: 16e9, disk_used_bytes: (i % 90) * 1e9, disk_total_bytes: 100e9, disk_percent: i % 90},
    // Most nodes sync events; a few lag behind.
    sync: i % 7 === 0 ? null : {lag_s: i % 23 === 0 ? 30 + (i % 300) : (i % 10) / 10, caught_up: i % 23 !== 0},
  }
}

type Run = {frames: number[]; frameCpu: number[]; held: number[]; ink: number[]; keys: number[]; updates: number; skipped: number; heartbeats: number; peakRss: number; cpuMs: number}

/** Ink draws at most every 33 ms (30 fps): an update drawn later than that after the last frame waits for it. */
const INK_THROTTLE_MS = 34

type Scenario = {name: string; view: ViewName; sortKeys: string; sortedBy: string | null}
const SCENARIOS: Scenario[] = [
  // Sorted by heartbeat age: every heartbeat moves a row to the top, the worst case for the table.
  {name: 'nodes', view: 'nodes', sortKeys: 'sssssss', sortedBy: 'heartbeat ↑'},
  {name: 'nodes_by_id', view: 'nodes', sortKeys: '', sortedBy: null},
  {name: 'overview', view: 'overview', sortKeys: '', sortedBy: null},
]

async function runView(scenario: Scenario, nodes: FleetNode[]): Promise<Run> {
  const view = scenario.view
  const snap: FleetSnapshot = {nodes, alerts: [], rollouts: [], commands: [], images: []}
  let channel: EventChannel | undefined
  const source: FleetSource = {
    info: {hqUrl: 'https://hq.bench:8443', user: 'bench', role: 'viewer'},
    snapshot: async () => snap,
    events: (signal) => (channel = new EventChannel(signal)),
    nodeDetail: () => Promise.reject(new Error('not in the bench')),
    runMode: () => Promise.reject(new Error('read-only')),
    upgrade: () => Promise.reject(new Error('read-only')),
    rollback: () => Promise.reject(new Error('read-only')),
    revoke: () => Promise.reject(new Error('read-only')),
    approve: () => Promise.reject(new Error('read-only')),
    promote: () => Promise.reject(new Error('read-only')),
    ack: () => Promise.reject(new Error('read-only')),
    silence: () => Promise.reject(new Error('read-only')),
    broadcast: () => Promise.reject(new Error('read-only')),
  }

  // A frame: from what caused it (an update handed over, the clock's tick, a key) to ink's render of it.
  let pendingUpdate: number | null = null
  let pendingTick: number | null = null
  let pendingKey: number | null = null
  // The process's CPU time when the frame's cause came: on a machine where other work competes for
  // the cores, the wall time of a frame includes waiting for one; its CPU time does not.
  let causeCpu: NodeJS.CpuUsage | null = null
  const cpuNow = () => process.cpuUsage()
  let lastRenderAt = -Infinity
  const run: Run = {frames: [], frameCpu: [], held: [], ink: [], keys: [], updates: 0, skipped: 0, heartbeats: 0, peakRss: 0, cpuMs: 0}
  let measuring = false
  const onRender = ({renderTime}: {renderTime: number}) => {
    const t = performance.now()
    const prevRenderAt = lastRenderAt
    lastRenderAt = t
    if (measuring) run.ink.push(renderTime)
    const cause = pendingUpdate !== null && pendingTick !== null ? Math.min(pendingUpdate, pendingTick) : (pendingUpdate ?? pendingTick)
    if (cause !== null && measuring) {
      if (cause - prevRenderAt < INK_THROTTLE_MS) run.held.push(t - cause)
      else {
        run.frames.push(t - cause)
        if (causeCpu) {
          const c = process.cpuUsage(causeCpu)
          run.frameCpu.push((c.user + c.system) / 1000)
        }
      }
    }
    if (pendingKey !== null && measuring) run.keys.push(t - pendingKey)
    pendingUpdate = null
    pendingTick = null
    pendingKey = null
    causeCpu = null
  }
  // An update that no frame followed, once ink's throttle could no longer be holding one back,
  // changed nothing on screen: skipped, not a frame.
  const settle = (t0: number) => {
    if (pendingUpdate !== t0) return
    const wait = lastRenderAt + INK_THROTTLE_MS + 4 - performance.now()
    if (wait > 0) return void setTimeout(() => settle(t0), wait)
    pendingUpdate = null
    if (pendingTick === null) causeCpu = null
    if (measuring) run.skipped++
  }
  // The App's clock: the once-a-second tick that ages every row reads it.
  const clock: Clock = {
    now: () => {
      if (pendingTick === null) {
        pendingTick = performance.now()
        causeCpu ??= cpuNow()
      }
      return new Date()
    },
  }
  const stdout = new FakeStdout(COLUMNS, ROWS)
  const stdin = new FakeStdin()
  // Ink wraps each frame in synchronized-output markers, written apart: the screen is the last text.
  const screen = () => stdout.frames.findLast((f) => !/^\u001B\[\?\d+[hl]$/.test(f)) ?? ''
  const app = render(
    createElement(App, {
      source,
      readonly: true,
      colors: true,
      clock,
      initialView: view,
      feed: {
        clock: systemClock,
        onUpdate: () => {
          run.updates++
          if (pendingUpdate !== null) return
          const t0 = performance.now()
          pendingUpdate = t0
          causeCpu ??= cpuNow()
          setTimeout(() => settle(t0), 0)
        },
      },
    }),
    {stdout: stdout as unknown as NodeJS.WriteStream, stdin: stdin as unknown as NodeJS.ReadStream, exitOnCtrlC: false, patchConsole: false, onRender},
  )
  while (!channel) await sleep(1)
  channel.push({type: 'ready', at: new Date().toISOString()})
  while (!screen().includes('● live')) await sleep(5)
  if (scenario.sortedBy) {
    for (const k of scenario.sortKeys) stdin.write(k)
    for (let i = 0; i < 500 && !screen().includes(`sort: ${scenario.sortedBy}`); i++) await sleep(10)
    if (!screen().includes(`sort: ${scenario.sortedBy}`)) note(`the nodes view is not sorted by ${scenario.sortedBy}:\n${screen()}`)
  }

  // 100 heartbeats/s: every 10 ms one node's row comes back with a fresh heartbeat (HQ coalesces per
  // node per second, so these are distinct nodes).
  measuring = true
  const cpu0 = process.cpuUsage()
  const started = performance.now()
  let next = 0
  let sent = 0
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * RATE)
    const batch: FleetEvent[] = []
    while (sent < due) {
      const n = nodes[(next = (next + 7919) % nodes.length)]!
      batch.push({type: 'nodes', nodes: [{...n, last_heartbeat_at: new Date().toISOString(), system: n.system && {...n.system, cpu_percent: (n.system.cpu_percent + 13) % 100}}]})
      sent++
    }
    if (batch.length) channel!.push(...batch)
  }, 10)
  const keys = setInterval(() => {
    pendingKey ??= performance.now()
    stdin.write(KEY.down)
  }, 500)
  const mem = setInterval(() => (run.peakRss = Math.max(run.peakRss, process.memoryUsage().rss)), 100)
  await sleep(SECS * 1000)
  clearInterval(timer)
  clearInterval(keys)
  clearInterval(mem)
  measuring = false
  const cpu = process.cpuUsage(cpu0)
  run.cpuMs = (cpu.user + cpu.system) / 1000
  run.heartbeats = sent
  app.unmount()
  return run
}

async function main(): Promise<void> {
  note(`react ${process.env.NODE_ENV} build; ${NODES} nodes, ${RATE} heartbeats/s, ${SECS} s per view, ${COLUMNS}×${ROWS}`)
  const now = new Date()
  const nodes = Array.from({length: NODES}, (_, i) => makeNode(i, now))
  const scenarios = SCENARIOS.filter((s) => ONLY === undefined || s.name === ONLY)
  if (scenarios.length === 0) throw new Error(`--only wants one of ${SCENARIOS.map((s) => s.name).join(', ')}`)
  for (const scenario of scenarios) {
    const r = await runView(scenario, nodes)
    const name = scenario.name
    emit(`${name}_frame_p50`, pct(r.frames, 50), 'ms')
    emit(`${name}_frame_p90`, pct(r.frames, 90), 'ms')
    emit(`${name}_frame_p99`, pct(r.frames, 99), 'ms')
    if (process.env.JIL_BENCH_FRAMES) note(`${name} frames: ${r.frames.map((f, i) => `${f.toFixed(1)}/${r.frameCpu[i]?.toFixed(1)}`).join(' ')}`)
    emit(`${name}_frame_max`, Math.max(...r.frames), 'ms')
    // The same frames in CPU time (the process's, all threads: GC helpers included).
    emit(`${name}_frame_cpu_p50`, pct(r.frameCpu, 50), 'ms')
    emit(`${name}_frame_cpu_p99`, pct(r.frameCpu, 99), 'ms')
    emit(`${name}_frames`, r.frames.length / SECS, '1/s')
    // Frames that waited for ink's throttle, and their latency from cause to screen (the wait included).
    emit(`${name}_frames_held`, r.held.length / SECS, '1/s')
    emit(`${name}_held_latency_p50`, pct(r.held, 50), 'ms')
    // ink's own time per render: layout, output and the write to the terminal (React's work before it not included).
    emit(`${name}_ink_render_p50`, pct(r.ink, 50), 'ms')
    emit(`${name}_ink_render_p99`, pct(r.ink, 99), 'ms')
    emit(`${name}_updates`, r.updates / SECS, '1/s')
    // Updates that changed nothing on screen: no React commit, so no ink render.
    emit(`${name}_updates_skipped`, r.skipped / SECS, '1/s')
    // Wall time above includes waiting for a core on a busy machine; this is the process's CPU time
    // (feed, React, ink, GC, and the bench's own heartbeat generator).
    emit(`${name}_cpu_per_update`, r.cpuMs / Math.max(1, r.updates), 'ms')
    emit(`${name}_cpu`, (r.cpuMs / (SECS * 1000)) * 100, '%')
    emit(`${name}_heartbeats`, r.heartbeats / SECS, '1/s')
    if (scenario.view === 'nodes') {
      // ↓ moves the cursor in the node table (in the Overview a key changes nothing to draw).
      emit(`${name}_key_to_screen_p50`, pct(r.keys, 50), 'ms')
      emit(`${name}_key_to_screen_max`, Math.max(...r.keys), 'ms')
    }
    emit(`${name}_peak_rss`, mib(r.peakRss), 'MiB')
  }
  const m = process.memoryUsage()
  emit('rss', mib(m.rss), 'MiB')
  emit('heap_used', mib(m.heapUsed), 'MiB')
}

await main()
