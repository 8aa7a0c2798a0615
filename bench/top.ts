// `jil top` under load: a fleet of 10,000 nodes (13 zones, three tracks, five services each) and 100
// heartbeats per second streaming through the whole dashboard as it runs — the feed (model + hooks,
// throttled to 10 updates/s) and ink rendering the App into a terminal of fixed size (a fake stdout,
// 120×40). Per view (Nodes, sorted by heartbeat age; Overview): the time of each frame, from the feed
// handing an update to the view until ink has written it (goal < 16 ms), and the process's CPU time
// per frame; while streaming, how long a key (↓) takes to reach the screen; memory (RSS, heap) at the
// end and at peak.
//
//   npm run bench -- top [--nodes N] [--rate HEARTBEATS_PER_S] [--secs S]
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
  }
}

type Run = {frames: number[]; keys: number[]; updates: number; heartbeats: number; peakRss: number; cpuMs: number}

async function runView(view: ViewName, nodes: FleetNode[], clock: Clock): Promise<Run> {
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

  // A frame: from the feed handing over an update (or a key arriving) to ink's write of it.
  let pendingUpdate: number | null = null
  let pendingKey: number | null = null
  const run: Run = {frames: [], keys: [], updates: 0, heartbeats: 0, peakRss: 0, cpuMs: 0}
  let measuring = false
  const onRender = () => {
    const t = performance.now()
    if (pendingUpdate !== null && measuring) run.frames.push(t - pendingUpdate)
    if (pendingKey !== null && measuring) run.keys.push(t - pendingKey)
    pendingUpdate = null
    pendingKey = null
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
        clock,
        onUpdate: () => {
          run.updates++
          pendingUpdate ??= performance.now()
        },
      },
    }),
    {stdout: stdout as unknown as NodeJS.WriteStream, stdin: stdin as unknown as NodeJS.ReadStream, exitOnCtrlC: false, patchConsole: false, onRender},
  )
  while (!channel) await sleep(1)
  channel.push({type: 'ready', at: clock.now().toISOString()})
  while (!screen().includes('● live')) await sleep(5)
  if (view === 'nodes') {
    // Sort by heartbeat age: every heartbeat moves a row, the worst case for the table.
    for (const k of 'sssssss') stdin.write(k)
    for (let i = 0; i < 500 && !screen().includes('sort: heartbeat ↑'); i++) await sleep(10)
    if (!screen().includes('sort: heartbeat ↑')) note(`the nodes view is not sorted by heartbeat:\n${screen()}`)
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
  const clock = systemClock
  const nodes = Array.from({length: NODES}, (_, i) => makeNode(i, now))
  for (const view of ['nodes', 'overview'] as const) {
    const r = await runView(view, nodes, clock)
    emit(`${view}_frame_p50`, pct(r.frames, 50), 'ms')
    emit(`${view}_frame_p99`, pct(r.frames, 99), 'ms')
    emit(`${view}_frame_max`, Math.max(...r.frames), 'ms')
    emit(`${view}_frames`, r.frames.length / SECS, '1/s')
    // Wall time above includes waiting for a core on a busy machine; this is the process's CPU time
    // (feed, React, ink, GC, and the bench's own heartbeat generator) per frame drawn.
    emit(`${view}_cpu_per_frame`, r.cpuMs / Math.max(1, r.frames.length), 'ms')
    emit(`${view}_cpu`, (r.cpuMs / (SECS * 1000)) * 100, '%')
    emit(`${view}_heartbeats`, r.heartbeats / SECS, '1/s')
    if (view === 'nodes') {
      // ↓ moves the cursor in the node table (in the Overview a key changes nothing to draw).
      emit(`${view}_key_to_screen_p50`, pct(r.keys, 50), 'ms')
      emit(`${view}_key_to_screen_max`, Math.max(...r.keys), 'ms')
    }
    emit(`${view}_peak_rss`, mib(r.peakRss), 'MiB')
  }
  const m = process.memoryUsage()
  emit('rss', mib(m.rss), 'MiB')
  emit('heap_used', mib(m.heapUsed), 'MiB')
}

await main()
