/**
 * The model of `jil top`, pure: the fleet store and how events change it, the node filter and sort,
 * what the Overview and Security views aggregate, and the window of rows a table renders. No React,
 * no I/O, no clock of its own: time is a parameter, so every rule here is a unit test.
 */
import type {ImageListRow} from '../cli/releases.js'
import {OPEN_STATES} from '../cli/rollouts.js'
import type {AlertSeverity, AlertView} from '../shared/alerts.js'
import type {FleetCommand, FleetNode, FleetNodeDetail, HeartbeatSync, NodeStatus, RolloutView} from '../shared/api.js'
import type {FleetEvent} from '../shared/fleet-events.js'
import {NODE_STATUSES} from '../shared/fleet.js'
import {lowerBound} from '../shared/sorted.js'
import {ZONES, zoneFromPath} from '../shared/zones.js'

/**
 * The 13 compliance zones (shared/zones.ts). Zones are data at HQ, but no route lists them; the
 * Overview shows every zone (an empty one too), and any other zone a node reports after these.
 */
export {ZONES}

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

  /**
   * The keys whose value differs (by identity) between two maps, and the keys `next` no longer
   * holds. Buckets `next` shares with `prev` are skipped unread: a few updates cost a few buckets.
   */
  static changes<V>(prev: CowMap<V>, next: CowMap<V>): {changed: string[]; removed: string[]} {
    const changed: string[] = []
    const removed: string[] = []
    if (prev === next) return {changed, removed}
    for (let b = 0; b < CowMap.BUCKETS; b++) {
      const p = prev.buckets[b]!
      const n = next.buckets[b]!
      if (p === n) continue
      for (const [k, v] of n) if (p.get(k) !== v) changed.push(k)
      for (const k of p.keys()) if (!n.has(k)) removed.push(k)
    }
    return {changed, removed}
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
type NodeFacts = {
  heartbeatMs: number
  certMs: number | null
  versions: string[]
  versionKey: number[]
  /** service → version pairs, and one string naming them all: the Overview counts nodes per signature, then expands the few distinct ones. */
  versionPairs: [string, string | null][]
  versionsSig: string
}
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
      versionPairs: Object.entries(n.versions),
      versionsSig: '',
    }
    f.versionsSig = f.versionPairs.map(([service, v]) => `${service}\u0000${v ?? ''}\u0000${v === null ? 0 : 1}`).join('\u0001')
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
    if (key === 'zone' && /^[A-Za-z]{2}([/_][A-Za-z]+)?$/.test(value)) f.zones.push(zoneFromPath(value.toUpperCase()))
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

export const SORT_KEYS = ['id', 'zone', 'status', 'version', 'cpu', 'mem', 'disk', 'heartbeat', 'sync', 'cert'] as const
export type SortKey = (typeof SORT_KEYS)[number]
export type NodeSort = {key: SortKey; desc: boolean}

/** Worst first when sorting by status: what needs a look comes to the top. */
const STATUS_RANK: Record<NodeStatus, number> = {offline: 0, degraded: 1, upgrading: 2, stopped: 3, paused: 4, pending: 5, active: 6, revoked: 7}

/** A node's sort key: a number, a string (id, zone) or version components. */
type SortKeyValue = number | string | readonly number[]

/**
 * A node's sort key. Only `status` depends on the time (a silent node turns offline); the others
 * are fixed for a node copy: heartbeat sorts by the heartbeat's time (youngest first ascending, as
 * its age would), so the order changes only when a node does.
 */
function sortKeyOf(n: FleetNode, key: SortKey, now: Date): SortKeyValue {
  let k: number
  switch (key) {
    case 'id':
      return n.id
    case 'zone':
      return n.zone
    case 'version':
      return facts(n).versionKey
    case 'status':
      return STATUS_RANK[statusAt(n, now)]
    case 'cpu':
      k = n.system?.cpu_percent ?? -1
      break
    case 'mem':
      k = memPercent(n) ?? -1
      break
    case 'disk':
      k = n.system?.disk_percent ?? -1
      break
    case 'heartbeat':
      k = -facts(n).heartbeatMs // never: +Infinity, last
      break
    case 'sync':
      k = n.sync ? n.sync.lag_s : -1
      break
    case 'cert':
      k = facts(n).certMs ?? Number.MAX_SAFE_INTEGER
      break
  }
  // A total order, for the binary searches of NodeOrder: NaN compares equal to everything.
  return Number.isNaN(k) ? -1 : k
}

/** The sort keys depending on the time: the order must be checked again as seconds pass. */
function sortDependsOnTime(key: SortKey): boolean {
  return key === 'status'
}

function compareKeys(a: SortKeyValue, b: SortKeyValue): number {
  if (typeof a === 'object' && typeof b === 'object') return compareVersionKeys(a as number[], b as number[])
  return a < b ? -1 : a > b ? 1 : 0
}

type Keyed = {id: string; key: SortKeyValue; node: FleetNode}

/** By key (reversed when descending), ties by id ascending both ways, so rows do not swap places as heartbeats come in. */
function compareKeyed(a: Keyed, b: Keyed, dir: 1 | -1): number {
  return compareKeys(a.key, b.key) * dir || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}

/**
 * Sorts by one key, ties broken by id (so the order is stable as heartbeats come in). Each node's
 * key is computed once, not per comparison.
 */
export function sortNodes(nodes: readonly FleetNode[], sort: NodeSort, now: Date): FleetNode[] {
  const dir = sort.desc ? -1 : 1
  const keyed = nodes.map((n): Keyed => ({id: n.id, key: sortKeyOf(n, sort.key, now), node: n}))
  keyed.sort((a, b) => compareKeyed(a, b, dir))
  return keyed.map((x) => x.node)
}

/** The nodes a Nodes view shows: filtered, then sorted. */
export function visibleNodes(nodes: Iterable<FleetNode>, f: NodeFilter, sort: NodeSort, now: Date): FleetNode[] {
  const out: FleetNode[] = []
  for (const n of nodes) if (matchesFilter(n, f, now)) out.push(n)
  return sortNodes(out, sort, now)
}

/**
 * The Nodes view's rows (filtered and sorted, as visibleNodes), kept up to date with the fleet
 * instead of sorted again for every frame: each update moves only the nodes that changed (found by
 * CowMap.changes), each by binary search. With 10,000 nodes and 100 heartbeats a second that is a
 * few dozen moves per frame instead of a 10,000-row sort. When the filter or the sort depends on
 * the time (status), every node is checked again once a second, and moved only if its place changed.
 */
export class NodeOrder {
  private entries: Keyed[] = []
  private readonly byId = new Map<string, Keyed>()
  private source: CowMap<FleetNode> | null = null
  private second = Number.NaN
  private readonly dir: 1 | -1
  private readonly timed: boolean
  /** Bumped whenever the rows or the node copies in them change. */
  version = 0

  constructor(
    readonly filter: NodeFilter,
    readonly sort: NodeSort,
  ) {
    this.dir = sort.desc ? -1 : 1
    this.timed = sortDependsOnTime(sort.key) || filter.statuses.length > 0
  }

  get size(): number {
    return this.entries.length
  }

  /** The nodes in rows [start, end). */
  slice(start: number, end: number): FleetNode[] {
    const out: FleetNode[] = []
    for (let i = Math.max(0, start); i < Math.min(end, this.entries.length); i++) out.push(this.entries[i]!.node)
    return out
  }

  ids(): string[] {
    return this.entries.map((e) => e.id)
  }

  /** Brings the rows up to date with `nodes` at `now`; cheap when neither changed. */
  update(nodes: CowMap<FleetNode>, now: Date): void {
    const second = Math.floor(now.getTime() / 1000)
    const tick = this.timed && second !== this.second
    if (nodes === this.source && !tick) return
    const prev = this.source
    this.source = nodes
    this.second = second
    if (prev === null) return this.rebuild(nodes, now)
    if (tick) {
      // Statuses move with the time: check every node, move the few whose place changed.
      const changes = CowMap.changes(prev, nodes)
      for (const id of changes.removed) this.place(id, undefined, now)
      for (const n of nodes.list()) this.place(n.id, n, now)
      return
    }
    const changes = CowMap.changes(prev, nodes)
    // A new snapshot replaces every copy: sorting once beats thousands of moves.
    if (changes.changed.length + changes.removed.length > Math.max(64, this.entries.length / 8)) return this.rebuild(nodes, now)
    for (const id of changes.removed) this.place(id, undefined, now)
    for (const id of changes.changed) this.place(id, nodes.get(id), now)
  }

  private rebuild(nodes: CowMap<FleetNode>, now: Date): void {
    this.entries = []
    this.byId.clear()
    for (const n of nodes.list()) {
      if (!matchesFilter(n, this.filter, now)) continue
      const e: Keyed = {id: n.id, key: sortKeyOf(n, this.sort.key, now), node: n}
      this.entries.push(e)
      this.byId.set(n.id, e)
    }
    this.entries.sort((a, b) => compareKeyed(a, b, this.dir))
    this.version++
  }

  /** Puts the node with this id (undefined: gone) where it belongs now, or takes it out. */
  private place(id: string, node: FleetNode | undefined, now: Date): void {
    const old = this.byId.get(id)
    const shown = node !== undefined && matchesFilter(node, this.filter, now)
    if (old && shown) {
      const key = sortKeyOf(node, this.sort.key, now)
      if (compareKeys(key, old.key) === 0) {
        if (old.node !== node) {
          old.node = node
          this.version++
        }
        return
      }
      this.remove(old)
      this.insert({id, key, node})
    } else if (old) {
      this.remove(old)
    } else if (shown) {
      this.insert({id, key: sortKeyOf(node, this.sort.key, now), node})
    }
  }

  /** The first row not before `e`. */
  private lowerBound(e: Keyed): number {
    return lowerBound(this.entries, e, (a, b) => compareKeyed(a, b, this.dir))
  }

  private insert(e: Keyed): void {
    this.entries.splice(this.lowerBound(e), 0, e)
    this.byId.set(e.id, e)
    this.version++
  }

  private remove(e: Keyed): void {
    let i = this.lowerBound(e)
    if (this.entries[i] !== e) i = this.entries.indexOf(e) // not reached while keys are a total order
    if (i >= 0) this.entries.splice(i, 1)
    this.byId.delete(e.id)
    this.version++
  }
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
  {key: 'sync', header: 'SYNC', width: 6, align: 'right', priority: 5.5},
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
    sync: syncCell(n.sync),
    cert: days === null ? '-' : days < 0 ? 'expired' : `${days}d`,
  }
}

/** Event sync lag: 0.4s, 12s, 5m (one decimal under ten seconds). */
export function lagText(seconds: number): string {
  const s = Math.max(0, seconds)
  if (s < 10) return `${(Math.round(s * 10) / 10).toFixed(1)}s`
  return shortAge(Math.round(s))
}

/** A node's event sync as its heartbeat reports it, in one line (jil top's node detail, jil fleet node). */
export function syncSummary(s: HeartbeatSync): string {
  return [`lag ${lagText(s.lag_s)}`, s.caught_up ? 'caught up' : 'behind', ...(s.outbox_backlog !== undefined ? [`outbox backlog ${s.outbox_backlog}`] : []), ...(s.gaps !== undefined ? [`gaps ${s.gaps}`] : [])].join(', ')
}

/**
 * A node's event sync in its row: ok (caught up), its lag when behind, - when it reports none (as
 * the other cells without a value; ASCII keeps ink's width measuring of the row on its fast path).
 */
export function syncCell(sync: FleetNode['sync']): string {
  if (!sync) return '-'
  return sync.caught_up ? 'ok' : lagText(sync.lag_s)
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
  /** Every zone of ZONES (also empty ones), in their order, then any other zone a node reports, by name. */
  zones: {zone: string; total: number; byStatus: StatusCounts}[]
  /** Per service, the versions the fleet runs, most nodes first. */
  versions: {service: string; versions: {version: string; nodes: number}[]}[]
  /**
   * Event sync from the last heartbeats of the nodes that are up (offline, pending and revoked ones
   * left out): how many report it, how many are behind, the median and worst lag (and whose); and
   * the open sync-lag alerts.
   */
  syncLag: {reporting: number; behind: number; medianLagS: number | null; maxLagS: number | null; worstNode: string | null; alerts: number}
  /** Alerts not resolved, by severity; acked ones counted apart. */
  alerts: {open: Record<AlertSeverity, number>; acked: number}
  rollouts: RolloutProgress[]
}

function zeroCounts(): StatusCounts {
  return Object.fromEntries(NODE_STATUSES.map((s) => [s, 0])) as StatusCounts
}

/** A node's part in the Overview's counts, as of its copy and the time. */
type Tallied = {
  node: FleetNode
  status: NodeStatus
  /** When the node turns offline with no event (its heartbeat's time + three intervals); null: its status does not move with the time. */
  offlineAt: number | null
  /** Its versions (null: revoked or pending, which run nothing of the fleet's). */
  versions: {sig: string; pairs: [string, string | null][]} | null
  /** Its event sync (null: none reported, or offline, revoked or pending). */
  lag: {id: string; lag: number; behind: boolean} | null
}

function tallied(n: FleetNode, now: Date): Tallied {
  const status = statusAt(n, now)
  const f = facts(n)
  const moves = !(n.status === 'revoked' || n.status === 'pending' || n.status === 'offline' || n.last_heartbeat_at === null)
  const up = status !== 'revoked' && status !== 'pending'
  return {
    node: n,
    status,
    offlineAt: moves ? f.heartbeatMs + OFFLINE_AFTER_S * 1000 : null,
    versions: up ? {sig: f.versionsSig, pairs: f.versionPairs} : null,
    lag: up && status !== 'offline' && n.sync && Number.isFinite(n.sync.lag_s) ? {id: n.id, lag: n.sync.lag_s, behind: !n.sync.caught_up} : null,
  }
}

/** Ascending lag; among equal lags the smaller id last, so the last entry is the worst node (the first by id among the worst). */
function compareLags(a: {id: string; lag: number}, b: {id: string; lag: number}): number {
  return a.lag - b.lag || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
}

/**
 * The node counts of the Overview (per status, per zone, versions per service, event sync), kept
 * up to date with the fleet instead of counted again every second: an update changes the counts of
 * the nodes that changed (CowMap.changes), and as seconds pass only nodes whose heartbeat has just
 * grown three intervals old turn offline. overview() counts from scratch with a new one.
 */
export class OverviewTally {
  private source: CowMap<FleetNode> | null = null
  private second = Number.NaN
  private readonly byNode = new Map<string, Tallied>()
  private readonly byStatus = zeroCounts()
  private readonly zones = new Map<string, {zone: string; total: number; byStatus: StatusCounts}>(ZONES.map((z) => [z, {zone: z, total: 0, byStatus: zeroCounts()}]))
  /** Nodes per set of versions: few distinct sets, however many nodes. */
  private readonly signatures = new Map<string, {pairs: [string, string | null][]; nodes: number}>()
  /** Sorted by compareLags: median and worst without sorting. */
  private readonly lags: {id: string; lag: number}[] = []
  private behind = 0

  update(nodes: CowMap<FleetNode>, now: Date): this {
    const second = Math.floor(now.getTime() / 1000)
    if (nodes === this.source && second === this.second) return this
    const prev = this.source
    this.source = nodes
    const changes = prev === null ? null : CowMap.changes(prev, nodes)
    if (changes === null || changes.changed.length + changes.removed.length > Math.max(64, this.byNode.size / 8)) {
      // The first count, or a new snapshot: counting everything once beats thousands of moves.
      this.clear()
      for (const n of nodes.list()) this.add(tallied(n, now), true)
      this.lags.sort(compareLags)
    } else {
      for (const id of changes.removed) this.remove(id)
      for (const id of changes.changed) {
        this.remove(id)
        this.add(tallied(nodes.get(id)!, now))
      }
    }
    if (second !== this.second) {
      this.second = second
      // A node whose status moves with the time is offline exactly when its heartbeat is that old.
      const t = now.getTime()
      const moved: FleetNode[] = []
      for (const c of this.byNode.values()) if (c.offlineAt !== null && t >= c.offlineAt !== (c.status === 'offline')) moved.push(c.node)
      for (const n of moved) {
        this.remove(n.id)
        this.add(tallied(n, now))
      }
    }
    return this
  }

  /** The node part of the Overview. */
  counts(): Pick<Overview, 'total' | 'byStatus' | 'zones' | 'versions'> & {syncLag: Omit<Overview['syncLag'], 'alerts'>} {
    const versions = new Map<string, Map<string, number>>()
    for (const {pairs, nodes} of this.signatures.values()) {
      for (const [service, v] of pairs) {
        let m = versions.get(service)
        if (!m) versions.set(service, (m = new Map()))
        const key = v ?? 'none'
        m.set(key, (m.get(key) ?? 0) + nodes)
      }
    }
    const zones = [...this.zones.values()]
    const known = new Set<string>(ZONES)
    const n = this.lags.length
    const worst = this.lags[n - 1]
    return {
      total: this.byNode.size,
      byStatus: {...this.byStatus},
      // The 13 in their order, then any other zone a node reports, by name.
      zones: [...zones.filter((z) => known.has(z.zone)), ...zones.filter((z) => !known.has(z.zone)).sort((a, b) => (a.zone < b.zone ? -1 : 1))].map((z) => ({zone: z.zone, total: z.total, byStatus: {...z.byStatus}})),
      versions: [...versions.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([service, m]) => ({service, versions: [...m.entries()].map(([version, nodes]) => ({version, nodes})).sort((a, b) => b.nodes - a.nodes || compareVersionKeys(versionKey(b.version), versionKey(a.version)))})),
      syncLag: {
        reporting: n,
        behind: this.behind,
        medianLagS: n === 0 ? null : n % 2 ? this.lags[n >> 1]!.lag : (this.lags[(n >> 1) - 1]!.lag + this.lags[n >> 1]!.lag) / 2,
        maxLagS: worst?.lag ?? null,
        worstNode: worst?.id ?? null,
      },
    }
  }

  private clear(): void {
    this.byNode.clear()
    for (const s of NODE_STATUSES) this.byStatus[s] = 0
    this.zones.clear()
    for (const z of ZONES) this.zones.set(z, {zone: z, total: 0, byStatus: zeroCounts()})
    this.signatures.clear()
    this.lags.length = 0
    this.behind = 0
  }

  /** `bulk`: the lag is appended, and the caller sorts them once. */
  private add(c: Tallied, bulk = false): void {
    this.byNode.set(c.node.id, c)
    this.byStatus[c.status]++
    let z = this.zones.get(c.node.zone)
    if (!z) this.zones.set(c.node.zone, (z = {zone: c.node.zone, total: 0, byStatus: zeroCounts()}))
    z.total++
    z.byStatus[c.status]++
    if (c.versions) {
      const sig = this.signatures.get(c.versions.sig)
      if (sig) sig.nodes++
      else this.signatures.set(c.versions.sig, {pairs: c.versions.pairs, nodes: 1})
    }
    if (c.lag) {
      if (bulk) this.lags.push(c.lag)
      else this.lags.splice(lowerBound(this.lags, c.lag, compareLags), 0, c.lag)
      if (c.lag.behind) this.behind++
    }
  }

  private remove(id: string): void {
    const c = this.byNode.get(id)
    if (!c) return
    this.byNode.delete(id)
    this.byStatus[c.status]--
    const z = this.zones.get(c.node.zone)!
    z.total--
    z.byStatus[c.status]--
    if (z.total === 0 && !(ZONES as readonly string[]).includes(z.zone)) this.zones.delete(z.zone)
    if (c.versions) {
      const sig = this.signatures.get(c.versions.sig)!
      if (--sig.nodes === 0) this.signatures.delete(c.versions.sig)
    }
    if (c.lag) {
      let i = lowerBound(this.lags, c.lag, compareLags)
      if (this.lags[i] !== c.lag) i = this.lags.indexOf(c.lag)
      if (i >= 0) this.lags.splice(i, 1)
      if (c.lag.behind) this.behind--
    }
  }
}

/**
 * The Overview at `now`. Counting every node is the tally's job: pass the one kept across calls
 * (the app does) to count only what changed since; without one, it counts from scratch.
 */
export function overview(state: FleetState, now: Date, tally: OverviewTally = new OverviewTally()): Overview {
  const counts = tally.update(state.nodes, now).counts()
  const open: Record<AlertSeverity, number> = {critical: 0, warning: 0}
  let acked = 0
  let lagAlerts = 0
  for (const a of state.alerts.values()) {
    if (a.state === 'resolved') continue
    if (a.state === 'acked') acked++
    else open[a.severity]++
    if (a.rule === 'sync-lag') lagAlerts++
  }
  return {
    ...counts,
    syncLag: {...counts.syncLag, alerts: lagAlerts},
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
export function alertsIn(state: Pick<FleetState, 'alerts'>, tab: AlertTab): AlertView[] {
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
  critical: boolean | null
  /** The container's state (running, exited, missing…); null: HQ did not say (an older HQ). */
  state: string | null
  version: string | null
  digest: string | null
  /** signed: a live manifest on the node's track holds the digest; none: no digest (no container); unknown: HQ did not say. */
  signature: 'signed' | 'unsigned' | 'deprecated' | 'none' | 'unknown'
  /** The container's health check (healthy, unhealthy, starting, - without one), or what HQ's alerts tell. */
  health: string
}

/**
 * The node's services. From HQ's detail (the last heartbeat: state, health, digest, version, and
 * whether a live manifest on the node's track signs the digest) when it has them; from an older HQ
 * only the versions, the digest when it is the track's current one (stack) or when the
 * image-unsigned alert names it, the signature status from the images list, health from the
 * service-down alert.
 */
export function serviceRows(
  node: FleetNode,
  detail: Pick<FleetNodeDetail, 'services'> | null,
  stack: {versions: Record<string, {version: string; digest: string} | null>} | null,
  images: readonly ImageListRow[],
  alerts: Iterable<AlertView>,
  now: Date,
): ServiceRow[] {
  if (detail?.services) {
    return detail.services.map((s) => ({
      service: s.name,
      critical: s.critical,
      state: s.state,
      version: s.version,
      digest: s.digest,
      signature: s.digest === null ? 'none' : s.signed ? 'signed' : s.deprecated ? 'deprecated' : 'unsigned',
      health: s.health === 'none' ? '-' : s.health,
    }))
  }
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
      return {service, critical: null, state: null, version, digest, signature, health}
    })
}

/** One agent's last result: its full report when HQ holds one, else the summary the heartbeat carried. */
export type AgentRow = {agent: string; ok: boolean; at: string; summary: string; critical: number; warning: number}

export function agentRows(detail: Pick<FleetNodeDetail, 'reports' | 'agents'>): AgentRow[] {
  const names = [...new Set([...Object.keys(detail.reports), ...Object.keys(detail.agents ?? {})])].sort()
  return names.map((agent) => {
    const r = detail.reports[agent as keyof FleetNodeDetail['reports']]
    const a = detail.agents?.[agent as keyof NonNullable<FleetNodeDetail['agents']>]
    // The newer of the two: a report HQ stored after the heartbeat, or the heartbeat's summary of a later run.
    // By time, not by text: '…:00Z' sorts after '…:00.500Z' as text.
    if (r && (!a || Date.parse(r.finished_at) >= Date.parse(a.at))) {
      return {agent, ok: r.ok, at: r.finished_at, summary: r.summary, critical: r.findings.filter((f) => f.severity === 'critical').length, warning: r.findings.filter((f) => f.severity === 'warning').length}
    }
    return {agent, ok: a!.ok, at: a!.at, summary: a!.summary, critical: a!.critical, warning: a!.warning}
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
