/**
 * The model of `jil top`, pure: the fleet store and how events change it, the node filter and sort,
 * what the Overview and Security views aggregate, and the window of rows a table renders. No React,
 * no I/O, no clock of its own: time is a parameter, so every rule here is a unit test.
 */
import type {ImageListRow} from '../cli/releases.js'
import {OPEN_STATES} from '../cli/rollouts.js'
import type {AlertSeverity, AlertView} from '../shared/alerts.js'
import type {FleetCommand, FleetNode, NodeStatus, RolloutView} from '../shared/api.js'
import type {FleetEvent} from '../shared/fleet-events.js'
import {NODE_STATUSES} from '../shared/fleet.js'

/**
 * The 13 compliance zones, in the order migration 001 seeds them. Zones are data at HQ, but no route
 * lists them; the Overview shows every zone (an empty one too), and any other zone a node reports
 * is shown after these.
 */
export const ZONES = ['CH/FINMA', 'AE/FSRA', 'SG/MAS', 'US/FINCEN', 'GB/FCA', 'DE/BAFIN', 'JP/JFSA', 'BR/CVM', 'IN/SEBI', 'AU/ASIC', 'KR/FSC', 'CA/OSC', 'HK/SFC'] as const

/** HQ calls a node offline after three missed heartbeats (60 s apart); the stream only says so when something else changes. */
export const OFFLINE_AFTER_S = 180

/** Resolved alerts and finished commands kept in memory: enough for the views, bounded for a dashboard left open for weeks. */
export const KEEP_RESOLVED_ALERTS = 500
export const KEEP_COMMANDS = 5_000

export type {ImageListRow}

/**
 * A map copied on write, by bucket: a change copies only the buckets its keys fall in (about 1/128 of
 * the entries each), not the whole map. The fleet store is immutable (views memoise on identity) and
 * 10,000 nodes with a heartbeat every few milliseconds would otherwise cost a 10,000-entry copy per
 * frame. Iteration order is by bucket, not insertion: views sort what they show.
 */
export class CowMap<V> implements ReadonlyMap<string, V> {
  static readonly BUCKETS = 128

  private constructor(
    private readonly buckets: readonly ReadonlyMap<string, V>[],
    readonly size: number,
  ) {}

  static of<V>(entries: Iterable<readonly [string, V]> = []): CowMap<V> {
    return new CowMap<V>(Array.from({length: CowMap.BUCKETS}, () => new Map<string, V>()), 0).with(entries)
  }

  private static bucketOf(key: string): number {
    // FNV-1a over the UTF-16 code units: cheap, and spreads ids like CH-ZUG-01 evenly.
    let h = 0x811c9dc5
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
    return (h >>> 0) % CowMap.BUCKETS
  }

  get(key: string): V | undefined {
    return this.buckets[CowMap.bucketOf(key)]!.get(key)
  }

  has(key: string): boolean {
    return this.buckets[CowMap.bucketOf(key)]!.has(key)
  }

  /** A copy with these entries set. */
  with(entries: Iterable<readonly [string, V]>): CowMap<V> {
    return this.change(entries, [])
  }

  /** A copy without these keys. */
  without(keys: Iterable<string>): CowMap<V> {
    return this.change([], keys)
  }

  private change(set: Iterable<readonly [string, V]>, remove: Iterable<string>): CowMap<V> {
    const buckets = [...this.buckets]
    const copied = new Set<number>()
    let size = this.size
    const writable = (b: number): Map<string, V> => {
      if (!copied.has(b)) {
        buckets[b] = new Map(buckets[b])
        copied.add(b)
      }
      return buckets[b] as Map<string, V>
    }
    for (const [k, v] of set) {
      const m = writable(CowMap.bucketOf(k))
      if (!m.has(k)) size++
      m.set(k, v)
    }
    for (const k of remove) {
      const b = CowMap.bucketOf(k)
      if (buckets[b]!.has(k) && writable(b).delete(k)) size--
    }
    return copied.size === 0 ? this : new CowMap(buckets, size)
  }

  /** The values in an array: what the views iterate per frame (faster than the iterator over 128 buckets). */
  list(): V[] {
    const out: V[] = []
    for (const b of this.buckets) for (const v of b.values()) out.push(v)
    return out
  }

  *entries(): MapIterator<[string, V]> {
    for (const b of this.buckets) yield* b.entries()
  }

  *keys(): MapIterator<string> {
    for (const b of this.buckets) yield* b.keys()
  }

  *values(): MapIterator<V> {
    for (const b of this.buckets) yield* b.values()
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries()
  }

  forEach(fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void): void {
    for (const b of this.buckets) for (const [k, v] of b) fn(v, k, this)
  }
}

/** The fleet as `jil top` holds it: everything by id, so an event upserts what it carries. */
export type FleetState = {
  nodes: CowMap<FleetNode>
  alerts: CowMap<AlertView>
  rollouts: CowMap<RolloutView>
  commands: CowMap<FleetCommand>
  images: readonly ImageListRow[]
  /** Bumped by every change, so views can memoise on it. */
  rev: number
}

/** What the list routes return, loaded after each `ready`. */
export type FleetSnapshot = {
  nodes: readonly FleetNode[]
  alerts: readonly AlertView[]
  rollouts: readonly RolloutView[]
  commands: readonly FleetCommand[]
  images: readonly ImageListRow[]
}

export const emptyFleet: FleetState = {nodes: CowMap.of(), alerts: CowMap.of(), rollouts: CowMap.of(), commands: CowMap.of(), images: [], rev: 0}

export function fromSnapshot(s: FleetSnapshot, rev = 1): FleetState {
  return prune({
    nodes: CowMap.of(s.nodes.map((n) => [n.id, n])),
    alerts: CowMap.of(s.alerts.map((a) => [a.id, a])),
    rollouts: CowMap.of(s.rollouts.map((r) => [r.id, r])),
    commands: CowMap.of(s.commands.map((c) => [c.id, c])),
    images: s.images,
    rev,
  })
}

export function apply(state: FleetState, event: FleetEvent): FleetState {
  return applyAll(state, [event])
}

/**
 * Applies a batch of events in order (the hook applies what arrived since the last frame in one go).
 * Each thing is replaced whole unless what it replaces is newer: events buffered while the snapshot
 * loaded, or sent by two HQ replicas, may arrive after a fresher copy.
 */
export function applyAll(state: FleetState, events: readonly FleetEvent[]): FleetState {
  const nodes = new Map<string, FleetNode>()
  const alerts = new Map<string, AlertView>()
  const rollouts = new Map<string, RolloutView>()
  const commands = new Map<string, FleetCommand>()
  for (const e of events) {
    switch (e.type) {
      case 'nodes':
        for (const n of e.nodes) upsert(nodes, state.nodes, n.id, n, nodeIsOlder)
        break
      case 'alerts':
        for (const a of e.alerts) upsert(alerts, state.alerts, a.id, a, alertIsOlder)
        break
      case 'rollouts':
        for (const r of e.rollouts) upsert(rollouts, state.rollouts, r.id, r, (x, y) => x.updated_at < y.updated_at)
        break
      case 'commands':
        for (const c of e.commands) upsert(commands, state.commands, c.id, c, (x, y) => COMMAND_RANK[x.status] < COMMAND_RANK[y.status])
        break
      case 'ready':
        break
    }
  }
  if (nodes.size + alerts.size + rollouts.size + commands.size === 0) return state
  return prune({
    nodes: nodes.size ? state.nodes.with(nodes) : state.nodes,
    alerts: alerts.size ? state.alerts.with(alerts) : state.alerts,
    rollouts: rollouts.size ? state.rollouts.with(rollouts) : state.rollouts,
    commands: commands.size ? state.commands.with(commands) : state.commands,
    images: state.images,
    rev: state.rev + 1,
  })
}

/** Stages `next` unless the copy it would replace (staged in this batch, or in the state) is newer. */
function upsert<T>(staged: Map<string, T>, current: CowMap<T>, id: string, next: T, isOlder: (next: T, cur: T) => boolean): void {
  const cur = staged.get(id) ?? current.get(id)
  if (cur !== undefined && isOlder(next, cur)) return
  staged.set(id, next)
}

function ms(iso: string | null): number {
  return iso === null ? -Infinity : Date.parse(iso)
}

/** A node copy is older when its last heartbeat is (a pause keeps the heartbeat time: equal counts as newer). */
function nodeIsOlder(next: FleetNode, cur: FleetNode): boolean {
  return facts(next).heartbeatMs < facts(cur).heartbeatMs
}

const ALERT_RANK = {open: 0, acked: 1, resolved: 2} as const
/** An alert only moves open → acked → resolved; last_seen only grows. */
function alertIsOlder(next: AlertView, cur: AlertView): boolean {
  return ALERT_RANK[next.state] < ALERT_RANK[cur.state] || ms(next.last_seen) < ms(cur.last_seen)
}

const COMMAND_RANK = {pending: 0, delivered: 1, succeeded: 2, failed: 2, expired: 2} as const

function prune(s: FleetState): FleetState {
  let {alerts, commands} = s
  let resolved = 0
  for (const a of alerts.values()) if (a.state === 'resolved') resolved++
  if (resolved > KEEP_RESOLVED_ALERTS) {
    const drop = [...alerts.values()]
      .filter((a) => a.state === 'resolved')
      .sort((a, b) => ms(b.resolved_at) - ms(a.resolved_at))
      .slice(KEEP_RESOLVED_ALERTS)
    alerts = alerts.without(drop.map((a) => a.id))
  }
  if (commands.size > KEEP_COMMANDS) {
    const drop = [...commands.values()].sort((a, b) => ms(b.created_at) - ms(a.created_at)).slice(KEEP_COMMANDS)
    commands = commands.without(drop.map((c) => c.id))
  }
  return alerts === s.alerts && commands === s.commands ? s : {...s, alerts, commands}
}

/**
 * What the views compute from a node again and again (times parsed, versions sorted), computed once
 * per node copy: an event replaces the copy, so the cache never goes stale.
 */
type NodeFacts = {heartbeatMs: number; certMs: number | null; versions: string[]; versionKey: number[]}
const FACTS = new WeakMap<FleetNode, NodeFacts>()

function facts(n: FleetNode): NodeFacts {
  let f = FACTS.get(n)
  if (!f) {
    const vs = [...new Set(Object.values(n.versions).filter((v): v is string => v !== null))].map((v) => ({v, k: versionKey(v)}))
    vs.sort((a, b) => compareVersionKeys(b.k, a.k))
    f = {
      heartbeatMs: ms(n.last_heartbeat_at),
      certMs: n.cert_not_after === null ? null : Date.parse(n.cert_not_after),
      versions: vs.map((x) => x.v),
      versionKey: vs[0]?.k ?? [-1],
    }
    FACTS.set(n, f)
  }
  return f
}

// ---------------------------------------------------------------------------------------------
// A node's figures as the views show them, at a given time

/** Seconds since the node's last heartbeat at `now` (null: never), not the age HQ computed when it sent the row. */
export function heartbeatAgeS(n: FleetNode, now: Date): number | null {
  return n.last_heartbeat_at === null ? null : Math.max(0, Math.floor((now.getTime() - facts(n).heartbeatMs) / 1000))
}

/** HQ's status, with "offline" applied as time passes (HQ sends no event for a node that goes silent). */
export function statusAt(n: FleetNode, now: Date): NodeStatus {
  if (n.status === 'revoked' || n.status === 'pending' || n.status === 'offline') return n.status
  const age = heartbeatAgeS(n, now)
  return age === null || age >= OFFLINE_AFTER_S ? 'offline' : n.status
}

/** Days until the node's certificate expires (negative: expired; null: unknown). */
export function certDaysLeft(n: FleetNode, now: Date): number | null {
  const cert = facts(n).certMs
  return cert === null ? null : Math.floor((cert - now.getTime()) / 86_400_000)
}

/** The versions a node's services run, distinct, highest first. */
export function nodeVersions(n: FleetNode): readonly string[] {
  return facts(n).versions
}

export function percent(used: number, total: number): number | null {
  return total > 0 ? (used / total) * 100 : null
}

export function memPercent(n: FleetNode): number | null {
  return n.system ? percent(n.system.memory_used_bytes, n.system.memory_total_bytes) : null
}

/** 42 → "42s", 300 → "5m", 7200 → "2h", 3 days → "3d". */
export function shortAge(seconds: number | null): string {
  if (seconds === null) return 'never'
  if (seconds < 60) return `${seconds}s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`
  return `${Math.floor(seconds / 86_400)}d`
}

/** Numeric version components for sorting (v95.3 → [95, 3]); anything else sorts lowest. */
function versionKey(v: string | undefined): number[] {
  const m = v === undefined ? null : /^v?(\d+(?:\.\d+)*)/.exec(v)
  return m ? m[1]!.split('.').map(Number) : [-1]
}

function compareVersionKeys(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

// ---------------------------------------------------------------------------------------------
// Filter: `/` in the Nodes view

export type NodeFilter = {
  /** Substrings of the node id, all required (case-insensitive). */
  text: string[]
  /** zone:CH/FINMA (or zone:CH for a country): any of them. */
  zones: string[]
  /** status:offline: any of them. */
  statuses: NodeStatus[]
  /** Tokens that are not understood (an unknown status, an unknown key): shown, not applied. */
  invalid: string[]
}

/** `ch zone:CH/FINMA status:offline`: terms separated by spaces, all must hold; a key given twice means either. */
export function parseFilter(q: string): NodeFilter {
  const f: NodeFilter = {text: [], zones: [], statuses: [], invalid: []}
  for (const token of q.trim().split(/\s+/).filter(Boolean)) {
    const i = token.indexOf(':')
    if (i < 0) {
      f.text.push(token.toUpperCase())
      continue
    }
    const key = token.slice(0, i).toLowerCase()
    const value = token.slice(i + 1)
    if (key === 'zone' && /^[A-Za-z]{2}([/_][A-Za-z]+)?$/.test(value)) f.zones.push(value.toUpperCase().replace('_', '/'))
    else if (key === 'status' && (NODE_STATUSES as readonly string[]).includes(value.toLowerCase())) f.statuses.push(value.toLowerCase() as NodeStatus)
    else f.invalid.push(token)
  }
  return f
}

export function matchesFilter(n: FleetNode, f: NodeFilter, now: Date): boolean {
  if (f.text.length > 0 && !f.text.every((t) => n.id.includes(t))) return false
  if (f.zones.length > 0 && !f.zones.some((z) => (z.includes('/') ? n.zone === z : n.zone.startsWith(`${z}/`)))) return false
  if (f.statuses.length > 0 && !f.statuses.includes(statusAt(n, now))) return false
  return true
}

// ---------------------------------------------------------------------------------------------
// Sort

export const SORT_KEYS = ['id', 'zone', 'status', 'version', 'cpu', 'mem', 'disk', 'heartbeat', 'cert'] as const
export type SortKey = (typeof SORT_KEYS)[number]
export type NodeSort = {key: SortKey; desc: boolean}

/** Worst first when sorting by status: what needs a look comes to the top. */
const STATUS_RANK: Record<NodeStatus, number> = {offline: 0, degraded: 1, upgrading: 2, stopped: 3, paused: 4, pending: 5, active: 6, revoked: 7}

/** A node's sort key as a number (or a string for id and zone), so that sorting compares primitives. */
function sortValue(n: FleetNode, key: Exclude<SortKey, 'version'>, now: Date): number | string {
  switch (key) {
    case 'id':
      return n.id
    case 'zone':
      return n.zone
    case 'status':
      return STATUS_RANK[statusAt(n, now)]
    case 'cpu':
      return n.system?.cpu_percent ?? -1
    case 'mem':
      return memPercent(n) ?? -1
    case 'disk':
      return n.system?.disk_percent ?? -1
    case 'heartbeat':
      return heartbeatAgeS(n, now) ?? Number.MAX_SAFE_INTEGER
    case 'cert':
      return facts(n).certMs ?? Number.MAX_SAFE_INTEGER
  }
}

/**
 * Sorts by one key, ties broken by id (so the order is stable as heartbeats come in). Each node's
 * key is computed once, not per comparison, and comparisons are of primitives: 10,000 nodes sort in
 * a few milliseconds, ten times a second.
 */
export function sortNodes(nodes: readonly FleetNode[], sort: NodeSort, now: Date): FleetNode[] {
  const dir = sort.desc ? -1 : 1
  const byId = (a: {id: string}, b: {id: string}) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  if (sort.key === 'version') {
    const keyed = nodes.map((n) => ({n, id: n.id, k: facts(n).versionKey}))
    keyed.sort((a, b) => compareVersionKeys(a.k, b.k) * dir || byId(a, b))
    return keyed.map((x) => x.n)
  }
  const key = sort.key
  const keyed = nodes.map((n) => ({n, id: n.id, k: sortValue(n, key, now)}))
  keyed.sort((a, b) => (a.k < b.k ? -dir : a.k > b.k ? dir : byId(a, b)))
  return keyed.map((x) => x.n)
}

/** The nodes a Nodes view shows: filtered, then sorted. */
export function visibleNodes(nodes: Iterable<FleetNode>, f: NodeFilter, sort: NodeSort, now: Date): FleetNode[] {
  const out: FleetNode[] = []
  for (const n of nodes) if (matchesFilter(n, f, now)) out.push(n)
  return sortNodes(out, sort, now)
}

// ---------------------------------------------------------------------------------------------
// Columns of the node table: narrow terminals drop the low-value ones instead of wrapping

export type NodeColumn = {key: SortKey; header: string; width: number; align: 'left' | 'right'; /** lower is kept longer */ priority: number}

export const NODE_COLUMNS: readonly NodeColumn[] = [
  {key: 'id', header: 'NODE', width: 14, align: 'left', priority: 0},
  {key: 'zone', header: 'ZONE', width: 10, align: 'left', priority: 2},
  {key: 'status', header: 'STATUS', width: 9, align: 'left', priority: 1},
  {key: 'version', header: 'VERSION', width: 14, align: 'left', priority: 4},
  {key: 'cpu', header: 'CPU', width: 5, align: 'right', priority: 7},
  {key: 'mem', header: 'MEM', width: 5, align: 'right', priority: 8},
  {key: 'disk', header: 'DISK', width: 5, align: 'right', priority: 6},
  {key: 'heartbeat', header: 'HEARTBEAT', width: 9, align: 'right', priority: 3},
  {key: 'cert', header: 'CERT', width: 8, align: 'right', priority: 5},
]

export const COLUMN_GAP = 2
/** The table's prefix: the cursor mark and a space. */
export const ROW_PREFIX = 2

/** The columns that fit in `width`, in table order: the lowest-priority ones go first. */
export function fitColumns(width: number, columns: readonly NodeColumn[] = NODE_COLUMNS): NodeColumn[] {
  const kept = [...columns]
  const total = () => ROW_PREFIX + kept.reduce((s, c) => s + c.width, 0) + COLUMN_GAP * Math.max(0, kept.length - 1)
  while (kept.length > 1 && total() > width) {
    let worst = 0
    for (let i = 1; i < kept.length; i++) if (kept[i]!.priority > kept[worst]!.priority) worst = i
    kept.splice(worst, 1)
  }
  return kept
}

function pct(v: number | null): string {
  return v === null ? '-' : `${Math.round(v)}%`
}

/** The cells of a node's row, as text. */
export function nodeCells(n: FleetNode, now: Date): Record<SortKey, string> {
  const days = certDaysLeft(n, now)
  const vs = nodeVersions(n)
  return {
    id: n.id,
    zone: n.zone,
    status: statusAt(n, now),
    version: vs.length === 0 ? '-' : vs.length === 1 ? vs[0]! : `${vs[0]}+${vs.length - 1}`,
    cpu: pct(n.system?.cpu_percent ?? null),
    mem: pct(memPercent(n)),
    disk: pct(n.system?.disk_percent ?? null),
    heartbeat: shortAge(heartbeatAgeS(n, now)),
    cert: days === null ? '-' : days < 0 ? 'expired' : `${days}d`,
  }
}

/** Pads or cuts to exactly `width` characters (cut text ends in …), so a row never wraps. */
export function fit(s: string, width: number, align: 'left' | 'right' = 'left'): string {
  if (width <= 0) return ''
  if (s.length > width) return width === 1 ? '…' : `${s.slice(0, width - 1)}…`
  return align === 'right' ? s.padStart(width) : s.padEnd(width)
}

// ---------------------------------------------------------------------------------------------
// Virtualised window: only the rows on screen are rendered

/**
 * The rows [top, end) to render so that the cursor stays visible, scrolling as little as possible
 * from the previous `top` (the list does not jump when the cursor moves within the screen).
 */
export function windowAt(total: number, cursor: number, height: number, prevTop = 0): {top: number; end: number} {
  const h = Math.max(1, height)
  const maxTop = Math.max(0, total - h)
  let top = Math.min(Math.max(0, prevTop), maxTop)
  if (cursor < top) top = cursor
  else if (cursor >= top + h) top = cursor - h + 1
  top = Math.min(Math.max(0, top), maxTop)
  return {top, end: Math.min(total, top + h)}
}

export function clamp(i: number, total: number): number {
  return total === 0 ? 0 : Math.min(Math.max(0, i), total - 1)
}

// ---------------------------------------------------------------------------------------------
// Overview

export type StatusCounts = Record<NodeStatus, number>

export type RolloutProgress = {id: string; image: string; version: string; target: string; state: string; done: number; failed: number; total: number}

export type Overview = {
  total: number
  byStatus: StatusCounts
  /** Every zone of ZONES (also empty ones), then any other zone a node reports. */
  zones: {zone: string; total: number; byStatus: StatusCounts}[]
  /** Per service, the versions the fleet runs, most nodes first. */
  versions: {service: string; versions: {version: string; nodes: number}[]}[]
  /** Nodes whose event sync is behind (open sync-lag alerts) and the worst lag. */
  syncLag: {nodes: number; maxLagS: number | null}
  /** Alerts not resolved, by severity; acked ones counted apart. */
  alerts: {open: Record<AlertSeverity, number>; acked: number}
  rollouts: RolloutProgress[]
}

function zeroCounts(): StatusCounts {
  return Object.fromEntries(NODE_STATUSES.map((s) => [s, 0])) as StatusCounts
}

export function overview(state: FleetState, now: Date): Overview {
  const byStatus = zeroCounts()
  const zones = new Map<string, {zone: string; total: number; byStatus: StatusCounts}>(ZONES.map((z) => [z, {zone: z, total: 0, byStatus: zeroCounts()}]))
  const versions = new Map<string, Map<string, number>>()
  for (const n of state.nodes.list()) {
    const s = statusAt(n, now)
    byStatus[s]++
    let z = zones.get(n.zone)
    if (!z) zones.set(n.zone, (z = {zone: n.zone, total: 0, byStatus: zeroCounts()}))
    z.total++
    z.byStatus[s]++
    if (s === 'revoked' || s === 'pending') continue
    for (const [service, v] of Object.entries(n.versions)) {
      let m = versions.get(service)
      if (!m) versions.set(service, (m = new Map()))
      const key = v ?? 'none'
      m.set(key, (m.get(key) ?? 0) + 1)
    }
  }
  const open: Record<AlertSeverity, number> = {critical: 0, warning: 0}
  let acked = 0
  let lagNodes = 0
  let maxLag: number | null = null
  for (const a of state.alerts.values()) {
    if (a.state === 'resolved') continue
    if (a.state === 'acked') acked++
    else open[a.severity]++
    if (a.rule === 'sync-lag') {
      lagNodes++
      const lag = typeof a.details.lag_s === 'number' ? a.details.lag_s : null
      if (lag !== null) maxLag = Math.max(maxLag ?? 0, lag)
    }
  }
  return {
    total: state.nodes.size,
    byStatus,
    zones: [...zones.values()],
    versions: [...versions.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([service, m]) => ({service, versions: [...m.entries()].map(([version, nodes]) => ({version, nodes})).sort((a, b) => b.nodes - a.nodes || compareVersionKeys(versionKey(b.version), versionKey(a.version)))})),
    syncLag: {nodes: lagNodes, maxLagS: maxLag},
    alerts: {open, acked},
    rollouts: [...state.rollouts.values()]
      .filter((r) => OPEN_STATES.has(r.state))
      .sort((a, b) => (a.created_at < b.created_at ? -1 : 1))
      .map((r) => ({
        id: r.id,
        image: r.image,
        version: r.version,
        target: r.target.node ?? r.target.zone ?? 'all',
        state: r.state,
        done: r.counts.done ?? 0,
        failed: (r.counts.failed ?? 0) + (r.counts.revert_failed ?? 0),
        total: r.nodes.length,
      })),
  }
}

/** `[#####.....]`: a progress bar `width` characters wide, brackets included. */
export function progressBar(done: number, total: number, width: number): string {
  const inner = Math.max(1, width - 2)
  const filled = total === 0 ? inner : Math.min(inner, Math.round((done / total) * inner))
  return `[${'#'.repeat(filled)}${'.'.repeat(inner - filled)}]`
}

// ---------------------------------------------------------------------------------------------
// Alerts

export type AlertTab = 'open' | 'acked' | 'resolved'

/** The alerts of a tab, critical first, then newest first. */
export function alertsIn(state: FleetState, tab: AlertTab): AlertView[] {
  const sev = {critical: 0, warning: 1} as const
  return [...state.alerts.values()]
    .filter((a) => a.state === tab)
    .sort((a, b) => sev[a.severity] - sev[b.severity] || (a.last_seen < b.last_seen ? 1 : a.last_seen > b.last_seen ? -1 : 0))
}

// ---------------------------------------------------------------------------------------------
// Security

export const CERT_BUCKETS = ['expired', '<7d', '<10d', '<30d', 'ok', 'unknown'] as const
export type CertBucket = (typeof CERT_BUCKETS)[number]

/** The alert rules' thresholds: critical within 7 days, warning within 10 (nodes renew 10 days before expiry). */
export function certBucket(daysLeft: number | null): CertBucket {
  if (daysLeft === null) return 'unknown'
  if (daysLeft < 0) return 'expired'
  if (daysLeft < 7) return '<7d'
  if (daysLeft < 10) return '<10d'
  if (daysLeft < 30) return '<30d'
  return 'ok'
}

export type Security = {
  /** Per zone (all 13, then others), node certificates by time left; revoked and pending nodes left out. */
  certGrid: {zone: string; buckets: Record<CertBucket, number>}[]
  /** The certificates expiring first. */
  expiring: {node_id: string; zone: string; days_left: number}[]
  /** Nodes running, or the registry holding, a digest with no live signed manifest (open image-unsigned alerts). */
  unsigned: {subject: string; node_id: string | null; severity: AlertSeverity; summary: string; digests: {service: string | null; digest: string}[]}[]
  /** Critical findings of the nodes' security agents (open security-critical alerts). */
  findings: {node_id: string; findings: {id: string; title: string}[]}[]
}

export function security(state: FleetState, now: Date, expiringLimit = 10): Security {
  const grid = new Map<string, Record<CertBucket, number>>(ZONES.map((z) => [z, zeroBuckets()]))
  const expiring: Security['expiring'] = []
  for (const n of state.nodes.list()) {
    if (n.status === 'revoked' || n.status === 'pending') continue
    const days = certDaysLeft(n, now)
    let row = grid.get(n.zone)
    if (!row) grid.set(n.zone, (row = zeroBuckets()))
    row[certBucket(days)]++
    if (days !== null && days < 30) expiring.push({node_id: n.id, zone: n.zone, days_left: days})
  }
  expiring.sort((a, b) => a.days_left - b.days_left || (a.node_id < b.node_id ? -1 : 1))
  const unsigned: Security['unsigned'] = []
  const findings: Security['findings'] = []
  for (const a of state.alerts.values()) {
    if (a.state === 'resolved') continue
    if (a.rule === 'image-unsigned') {
      const services = Array.isArray(a.details.services) ? (a.details.services as {service?: unknown; digest?: unknown}[]) : []
      const digests = services.length > 0 ? services.map((s) => ({service: typeof s.service === 'string' ? s.service : null, digest: String(s.digest ?? '')})) : typeof a.details.digest === 'string' ? [{service: null, digest: a.details.digest}] : []
      unsigned.push({subject: a.subject, node_id: a.node_id, severity: a.severity, summary: a.summary, digests})
    } else if (a.rule === 'security-critical' && a.node_id !== null) {
      const fs = Array.isArray(a.details.findings) ? (a.details.findings as {id?: unknown; title?: unknown}[]) : []
      findings.push({node_id: a.node_id, findings: fs.map((f) => ({id: String(f.id ?? ''), title: String(f.title ?? '')}))})
    }
  }
  unsigned.sort((a, b) => (a.severity === b.severity ? (a.subject < b.subject ? -1 : 1) : a.severity === 'critical' ? -1 : 1))
  findings.sort((a, b) => (a.node_id < b.node_id ? -1 : 1))
  return {certGrid: [...grid.entries()].map(([zone, buckets]) => ({zone, buckets})), expiring: expiring.slice(0, expiringLimit), unsigned, findings}
}

function zeroBuckets(): Record<CertBucket, number> {
  return Object.fromEntries(CERT_BUCKETS.map((b) => [b, 0])) as Record<CertBucket, number>
}

// ---------------------------------------------------------------------------------------------
// Images

export const TRACKS = ['devnet', 'testnet', 'mainnet'] as const
export type Track = (typeof TRACKS)[number]

/** Where an image on a track goes next (approve for, promote to); mainnet is the end. */
export function nextTrack(track: string): 'testnet' | 'mainnet' | null {
  return track === 'devnet' ? 'testnet' : track === 'testnet' ? 'mainnet' : null
}

/** Images by track (devnet, testnet, mainnet), then image name, newest version first. */
export function sortImages(images: readonly ImageListRow[]): ImageListRow[] {
  const t = (x: string) => (TRACKS as readonly string[]).indexOf(x)
  return [...images].sort((a, b) => t(a.track) - t(b.track) || (a.image < b.image ? -1 : a.image > b.image ? 1 : 0) || compareVersionKeys(versionKey(b.version), versionKey(a.version)))
}

/** The live (not deprecated) signed images of a track, newest first: what a node of it may be upgraded to. */
export function upgradeCandidates(images: readonly ImageListRow[], track: string): ImageListRow[] {
  return sortImages(images.filter((i) => i.track === track && !i.deprecated))
}

// ---------------------------------------------------------------------------------------------
// Node detail: what HQ tells about a node's services

export type ServiceRow = {
  service: string
  version: string | null
  digest: string | null
  /** signed: a live manifest on the node's track holds the digest; unsigned: HQ's image-unsigned alert names it. */
  signature: 'signed' | 'unsigned' | 'deprecated' | 'unknown'
  /** down: HQ's service-down alert names it (with its state/health); ok: the node is up and no alert names it. */
  health: string
}

/**
 * The node's services as far as HQ tells a user: the version each runs (heartbeat), the digest when
 * it is the track's current one (stack) or when the image-unsigned alert names it, the signature
 * status from the images list, and health from the service-down alert.
 */
export function serviceRows(
  node: FleetNode,
  stack: {versions: Record<string, {version: string; digest: string} | null>} | null,
  images: readonly ImageListRow[],
  alerts: Iterable<AlertView>,
  now: Date,
): ServiceRow[] {
  const unsigned = new Map<string, string>()
  const down = new Map<string, string>()
  for (const a of alerts) {
    if (a.node_id !== node.id || a.state === 'resolved') continue
    const services = Array.isArray(a.details.services) ? (a.details.services as Record<string, unknown>[]) : []
    for (const s of services) {
      if (typeof s.service !== 'string') continue
      if (a.rule === 'image-unsigned' && typeof s.digest === 'string') unsigned.set(s.service, s.digest)
      if (a.rule === 'service-down') down.set(s.service, s.state === 'running' ? String(s.health ?? 'unhealthy') : String(s.state ?? 'down'))
    }
  }
  const onTrack = new Map(images.filter((i) => i.track === node.track).map((i) => [i.digest, i]))
  const up = statusAt(node, now)
  return Object.entries(node.versions)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([service, version]) => {
      const current = stack?.versions[service] ?? null
      const digest = unsigned.get(service) ?? (current && version !== null && current.version === version ? current.digest : null)
      const image = digest ? onTrack.get(digest) : undefined
      const signature = unsigned.has(service) ? 'unsigned' : image ? (image.deprecated ? 'deprecated' : 'signed') : 'unknown'
      const health = down.get(service) ?? (up === 'offline' ? '?' : up === 'paused' || up === 'stopped' ? up : 'ok')
      return {service, version, digest, signature, health}
    })
}

// ---------------------------------------------------------------------------------------------
// Broadcast: each node's answer, as `commands` events bring it

export type BroadcastResultRow = {node_id: string; command_id: string | null; status: string; summary: string}

/**
 * The rows of a broadcast as sent, each brought up to date from the command HQ streamed last (its
 * status and the node's result); a node that refused keeps its refusal.
 */
export function broadcastResults(rows: readonly {node_id: string; command_id: string | null; status: string; summary: string; error: {code: string; message: string} | null}[], commands: ReadonlyMap<string, FleetCommand>): BroadcastResultRow[] {
  return rows
    .map((r) => {
      const c = r.command_id ? commands.get(r.command_id) : undefined
      if (!c) return {node_id: r.node_id, command_id: r.command_id, status: r.status, summary: r.error ? `${r.error.code}: ${r.error.message}` : r.summary}
      const summary = c.result ? (c.result.error ? `${c.result.summary} (${c.result.error.code})` : c.result.summary) : c.status === 'expired' ? 'expired before the node picked it up' : ''
      return {node_id: r.node_id, command_id: r.command_id, status: c.status, summary}
    })
    .sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0))
}
