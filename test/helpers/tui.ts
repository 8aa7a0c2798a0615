// Fakes by factory for `jil top`'s tests: fleet objects with partial overrides, a FleetSource whose
// live stream the test drives (push, end, fail), and key presses for ink-testing-library.
import {EventEmitter} from 'node:events'

import {render as inkRender} from 'ink'
import type {ReactElement} from 'react'

import type {ImageListRow} from '../../src/cli/releases.js'
import type {AlertView} from '../../src/shared/alerts.js'
import type {FleetCommand, FleetNode, FleetNodeDetail, RolloutView} from '../../src/shared/api.js'
import type {FleetEvent} from '../../src/shared/fleet-events.js'
import type {FleetSnapshot} from '../../src/tui/model.js'
import type {FleetSource, NodeDetailView} from '../../src/tui/source.js'

export const NOW = new Date('2026-01-10T12:00:00Z')

export function fleetNode(o: Partial<FleetNode> = {}): FleetNode {
  return {
    id: 'CH-ZUG-01',
    zone: 'CH/FINMA',
    operator: 'Acme Nodes',
    track: 'mainnet',
    status: 'active',
    run_mode: 'running',
    joined_at: '2026-01-01T00:00:00Z',
    last_heartbeat_at: new Date(NOW.getTime() - 10_000).toISOString(),
    heartbeat_age_s: 10,
    versions: {api: 'v95.3', settlement: 'v95.3'},
    cert_not_after: new Date(NOW.getTime() + 20 * 86_400_000).toISOString(),
    system: {cpu_percent: 12, load1: 0.3, memory_used_bytes: 4e9, memory_total_bytes: 16e9, disk_used_bytes: 50e9, disk_total_bytes: 100e9, disk_percent: 50},
    ...o,
  }
}

export function alertView(o: Partial<AlertView> = {}): AlertView {
  return {
    id: 'al_00000000000000000001',
    fingerprint: 'disk-critical:CH-ZUG-01',
    rule: 'disk-critical',
    subject: 'CH-ZUG-01',
    node_id: 'CH-ZUG-01',
    severity: 'critical',
    state: 'open',
    summary: 'CH-ZUG-01: disk 95 % full',
    details: {},
    silenced: false,
    first_seen: '2026-01-10T11:00:00Z',
    last_seen: '2026-01-10T11:59:00Z',
    resolved_at: null,
    acked_by: null,
    acked_at: null,
    ...o,
  }
}

export function rolloutView(o: Partial<RolloutView> = {}): RolloutView {
  return {
    id: 'ro_00000000000000000001',
    target: {zone: 'CH/FINMA', track: 'mainnet'},
    image: 'jil/api',
    repository: '127.0.0.1:5000/jil/api',
    digest: `sha256:${'a'.repeat(64)}`,
    version: 'v96.0',
    max_parallel: 1,
    min_healthy_s: 30,
    health_timeout_s: 300,
    auto_revert: false,
    canary: 0,
    state: 'running',
    reason: null,
    created_by: 'alice',
    created_at: '2026-01-10T11:50:00Z',
    updated_at: '2026-01-10T11:55:00Z',
    finished_at: null,
    counts: {done: 1, pending: 3},
    nodes: [1, 2, 3, 4].map((i) => ({node_id: `CH-ZUG-0${i}`, position: i, state: i === 1 ? 'done' : 'pending', services: [], started_at: null, healthy_since: null, finished_at: null, error: null})),
    ...o,
  }
}

export function fleetCommand(o: Partial<FleetCommand> = {}): FleetCommand {
  return {
    id: 'cmd_00000000000000000001',
    node_id: 'CH-ZUG-01',
    command: 'refresh',
    status: 'pending',
    created_by: 'alice',
    created_at: '2026-01-10T11:59:00Z',
    expires_at: '2026-01-10T12:09:00Z',
    delivered_at: null,
    deliveries: 0,
    finished_at: null,
    result: null,
    ...o,
  }
}

export function imageRow(o: Partial<ImageListRow> = {}): ImageListRow {
  return {image: 'jil/api', version: 'v96.0', digest: `sha256:${'b'.repeat(64)}`, track: 'testnet', approvals: 1, approvers: ['bob'], signed_by: '0123456789abcdef', pushed_by: 'ci', deprecated: null, ...o}
}

export function snapshot(o: Partial<FleetSnapshot> = {}): FleetSnapshot {
  return {nodes: [], alerts: [], rollouts: [], commands: [], images: [], ...o}
}

export function nodeDetail(node: FleetNode, o: Partial<FleetNodeDetail> = {}): NodeDetailView {
  return {
    node: {
      ...node,
      reports: {},
      state: {desired: {run_mode: node.run_mode, config_version: 1, sequence: 4}, applied: {run_mode: node.run_mode, sequence: 4, config_version: 1, at: node.last_heartbeat_at ?? ''}, in_sync: true},
      config: {desired_version: 1, applied_version: 1, desired: []},
      ...o,
    },
    stack: null,
  }
}

/** One connection of the fake live stream: the test pushes events, then ends or fails it. */
export class EventChannel implements AsyncIterable<FleetEvent> {
  private buffered: FleetEvent[] = []
  private waiting: ((r: IteratorResult<FleetEvent>) => void) | null = null
  private failWith: ((err: unknown) => void) | null = null
  private done = false
  private error: unknown = undefined

  constructor(readonly signal: AbortSignal) {
    signal.addEventListener('abort', () => this.end(), {once: true})
  }

  push(...events: FleetEvent[]): void {
    for (const e of events) {
      if (this.waiting) {
        const w = this.waiting
        this.waiting = null
        this.failWith = null
        w({value: e, done: false})
      } else this.buffered.push(e)
    }
  }

  end(): void {
    this.done = true
    if (this.waiting) {
      const w = this.waiting
      this.waiting = null
      w({value: undefined, done: true})
    }
  }

  fail(err: unknown): void {
    this.error = err
    if (this.failWith) {
      const f = this.failWith
      this.waiting = null
      this.failWith = null
      f(err)
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<FleetEvent> {
    return {
      next: () => {
        const e = this.buffered.shift()
        if (e) return Promise.resolve({value: e, done: false})
        if (this.error !== undefined) return Promise.reject(this.error)
        if (this.done) return Promise.resolve({value: undefined, done: true})
        return new Promise((resolve, reject) => {
          this.waiting = resolve
          this.failWith = reject
        })
      },
    }
  }
}

export type FakeSource = FleetSource & {
  /** Every connection opened so far, newest last. */
  channels: EventChannel[]
  /** Every action called: [method, ...args]. */
  calls: unknown[][]
  snapshots: number
}

/**
 * A FleetSource whose stream the test drives: each events() call opens a new EventChannel. Actions
 * record their arguments and answer with a line; override any method to fail or answer otherwise.
 */
export function fakeSource(o: Partial<FleetSource> & {snap?: FleetSnapshot | (() => FleetSnapshot)} = {}): FakeSource {
  const channels: EventChannel[] = []
  const calls: unknown[][] = []
  const record =
    (name: string, answer = `${name} done`) =>
    async (...args: unknown[]) => {
      calls.push([name, ...args])
      return answer
    }
  const src: FakeSource = {
    channels,
    calls,
    snapshots: 0,
    info: {hqUrl: 'https://hq.test:8443', user: 'alice', role: 'ops-lead'},
    async snapshot() {
      src.snapshots++
      const s = o.snap ?? snapshot()
      return typeof s === 'function' ? s() : s
    },
    events(signal) {
      const c = new EventChannel(signal)
      channels.push(c)
      return c
    },
    async nodeDetail(id) {
      calls.push(['nodeDetail', id])
      return nodeDetail(fleetNode({id}))
    },
    runMode: record('runMode') as FleetSource['runMode'],
    upgrade: record('upgrade') as FleetSource['upgrade'],
    rollback: record('rollback') as FleetSource['rollback'],
    revoke: record('revoke') as FleetSource['revoke'],
    approve: record('approve') as FleetSource['approve'],
    promote: record('promote') as FleetSource['promote'],
    ack: record('ack') as FleetSource['ack'],
    silence: record('silence') as FleetSource['silence'],
    async broadcast(command, target) {
      calls.push(['broadcast', command, target])
      return {command, target: 'all', rows: [{node_id: 'CH-ZUG-01', command_id: 'cmd_00000000000000000001', status: 'pending', summary: '', error: null}]}
    },
    ...o,
  }
  return src
}

/** Lets React commit and ink write the frame (and flush a lone Esc, which ink holds for a tick). */
export async function tick(ms = 0): Promise<void> {
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setTimeout(r, ms))
}

export const KEY = {up: '\u001B[A', down: '\u001B[B', left: '\u001B[D', right: '\u001B[C', enter: '\r', esc: '\u001B', tab: '\t', backspace: '\u007F'} as const

/**
 * Types keys one at a time, each as its own terminal read, then lets the views drain them (one key
 * per turn of the event loop) and draw. A string of several keys in one write is one read.
 */
export async function press(stdin: {write: (s: string) => void}, ...keys: string[]): Promise<void> {
  for (const k of keys) {
    stdin.write(k)
    await tick(k === KEY.esc ? 5 : 1)
  }
  for (let i = 0; i < 4; i++) await tick()
}

/** Polls until `fn` holds (the frame or a state caught up), failing with what was seen. */
export async function eventually(fn: () => boolean | void, what: string, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      if (fn() !== false) return
    } catch (err) {
      if (Date.now() > end) throw err
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await tick(10)
  }
}

/** An output stream of a fixed size that keeps the frames ink writes (ink-testing-library's is always 100 columns). */
export class FakeStdout extends EventEmitter {
  readonly frames: string[] = []
  isTTY = true
  constructor(
    public columns = 100,
    public rows = 30,
  ) {
    super()
  }
  write = (frame: string): boolean => {
    this.frames.push(frame)
    return true
  }
  lastFrame = (): string => this.frames.at(-1) ?? ''
}

/** Keys in, as ink reads them from a terminal in raw mode. */
export class FakeStdin extends EventEmitter {
  isTTY = true
  private data: string | null = null
  write = (data: string): void => {
    this.data = data
    this.emit('readable')
    this.emit('data', data)
  }
  read = (): string | null => {
    const d = this.data
    this.data = null
    return d
  }
  setEncoding(): void {}
  setRawMode(): void {}
  resume(): void {}
  pause(): void {}
  ref(): void {}
  unref(): void {}
}

/** Renders with ink itself into a terminal of the given size (debug: every frame written whole). */
export function renderSized(tree: ReactElement, size: {columns: number; rows: number} = {columns: 100, rows: 30}) {
  const stdout = new FakeStdout(size.columns, size.rows)
  const stdin = new FakeStdin()
  const instance = inkRender(tree, {stdout: stdout as unknown as NodeJS.WriteStream, stdin: stdin as unknown as NodeJS.ReadStream, debug: true, exitOnCtrlC: false, patchConsole: false})
  return {stdout, stdin, lastFrame: stdout.lastFrame, unmount: instance.unmount, waitUntilExit: instance.waitUntilExit}
}
