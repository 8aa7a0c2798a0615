import type {AlertView} from '../../shared/alerts.js'
import type {FleetCommand, FleetNode, RolloutView} from '../../shared/api.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import type {FleetEvent} from '../../shared/fleet-events.js'

/** What changed, as the live stream names it (every event type but `ready`). */
export type ChangeKind = 'nodes' | 'alerts' | 'rollouts' | 'commands'
export const CHANGE_KINDS = ['nodes', 'alerts', 'rollouts', 'commands'] as const satisfies readonly ChangeKind[]

/** The one notification channel of the live stream, shared by every HQ replica on the database. */
export const FLEET_EVENTS_CHANNEL = 'jil_fleet_events'

/** PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more: each one stays below this. */
export const MAX_PAYLOAD_BYTES = 7_900

/** Things per SSE message: a client parses a whole fleet's worth of changes in digestible pieces. */
export const MAX_ITEMS_PER_EVENT = 500

/** How often the heartbeats' node changes go out, coalesced (at most one NOTIFY burst per period per replica). */
export const TOUCH_FLUSH_MS = 1_000

/** The payloads announcing `ids` of `kind`, each under MAX_PAYLOAD_BYTES (ids are short: a few hundred per payload). */
export function changePayloads(kind: ChangeKind, ids: Iterable<string>): string[] {
  const head = `{"kind":${JSON.stringify(kind)},"ids":[`
  const out: string[] = []
  let parts: string[] = []
  let bytes = Buffer.byteLength(head) + 2
  for (const id of new Set(ids)) {
    const part = JSON.stringify(id)
    const n = Buffer.byteLength(part) + 1
    if (parts.length > 0 && bytes + n > MAX_PAYLOAD_BYTES) {
      out.push(`${head}${parts.join(',')}]}`)
      parts = []
      bytes = Buffer.byteLength(head) + 2
    }
    parts.push(part)
    bytes += n
  }
  if (parts.length > 0) out.push(`${head}${parts.join(',')}]}`)
  return out
}

/**
 * Announces that these things changed. Call it inside the writer's transaction: the notification
 * goes out exactly when (and only if) the change commits, to every HQ replica. One statement
 * whatever the number of ids; nothing is sent for none.
 */
export async function notifyChanged(q: Queryable, kind: ChangeKind, ids: Iterable<string>): Promise<void> {
  const payloads = changePayloads(kind, ids)
  if (payloads.length === 0) return
  await q.query('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [FLEET_EVENTS_CHANNEL, payloads])
}

/** Loads the current views of changed things by id, set-wise (one query per kind, never one per id). */
export type FleetViews = {
  nodes(ids: string[]): Promise<FleetNode[]>
  alerts(ids: string[]): Promise<AlertView[]>
  rollouts(ids: string[]): Promise<RolloutView[]>
  commands(ids: string[]): Promise<FleetCommand[]>
}

/** One stream's side of a subscription. */
export type FleetSubscriber = {
  readonly types: ReadonlySet<ChangeKind>
  /** Called once, at the moment the subscriber starts receiving (write `ready` here: nothing after it is missed). */
  open(): void
  /** An event and its JSON, serialised once for all subscribers. */
  send(event: FleetEvent, json: string): void
  /** The hub lets go of the subscriber (closing, or notifications may have been missed): end the stream. */
  end(): void
}

export type FleetEventHubOptions = {
  /** Coalescing period of touched nodes (default TOUCH_FLUSH_MS). */
  flushMs?: number
  onError?: (err: unknown) => void
}

/**
 * The live fleet stream's hub, one per HQ process. Publish side: writers call notifyChanged in
 * their transactions; the heartbeat ingester, far too hot to notify per heartbeat, calls touched()
 * and the hub sends one coalesced NOTIFY per period (an owned, single-flight, unref'd timer).
 * Subscribe side: one LISTEN for the process, taken with the first subscriber; each batch of
 * notifications is loaded ONCE for all subscribers and fanned out to those who want its kind.
 * Nothing is loaded while nobody subscribes.
 */
export class FleetEventHub {
  private readonly subscribers = new Set<FleetSubscriber>()
  private readonly touchedIds = new Set<string>()
  private flushTimer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined
  private listening: Promise<() => Promise<void>> | undefined
  private pending = new Map<ChangeKind, Set<string>>()
  private loading: Promise<void> | undefined
  private closed = false
  private readonly flushMs: number
  /** Notifications received, loads made and events sent (for tests and metrics). */
  readonly stats = {notifications: 0, loads: 0, events: 0}

  constructor(
    private readonly db: Db,
    private readonly views: FleetViews,
    private readonly o: FleetEventHubOptions = {},
  ) {
    this.flushMs = o.flushMs ?? TOUCH_FLUSH_MS
  }

  /** Notifies in `tx` (see notifyChanged). */
  changed(tx: Queryable, kind: ChangeKind, ids: Iterable<string>): Promise<void> {
    return notifyChanged(tx, kind, ids)
  }

  /** Nodes whose heartbeat was just stored: announced together with the others at the next flush. */
  touched(nodeIds: Iterable<string>): void {
    if (this.closed) return
    for (const id of nodeIds) this.touchedIds.add(id)
    this.arm()
  }

  get subscriberCount(): number {
    return this.subscribers.size
  }

  /**
   * Adds a subscriber once this process LISTENs (so `open()` marks the point from which nothing is
   * missed); returns its unsubscribe.
   */
  async subscribe(s: FleetSubscriber): Promise<() => void> {
    if (this.closed) throw closing()
    this.listening ??= this.db.listen(FLEET_EVENTS_CHANNEL, (p) => this.received(p), {onReconnect: () => this.missed()})
    try {
      await this.listening
    } catch (err) {
      this.listening = undefined // the next subscriber tries again
      throw err
    }
    if (this.closed) throw closing()
    this.subscribers.add(s)
    s.open()
    return () => void this.subscribers.delete(s)
  }

  /** Ends every subscriber's stream (HQ's preClose), the others stay usable. */
  endAll(): void {
    for (const s of [...this.subscribers]) {
      this.subscribers.delete(s)
      s.end()
    }
  }

  /** Stops the timer, sends what is still touched, stops listening, ends every stream. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    await this.flushing
    await this.flush()
    this.endAll()
    await this.loading
    const unlisten = await this.listening?.catch(() => undefined)
    await unlisten?.()
  }

  /** Sends the touched nodes now (the timer's job; close() and tests call it too). */
  flush(): Promise<void> {
    if (this.flushing) {
      // A NOTIFY still in flight: this tick is skipped, the ids wait for the next.
      this.arm()
      return this.flushing
    }
    if (this.touchedIds.size === 0) return Promise.resolve()
    const ids = [...this.touchedIds]
    this.touchedIds.clear()
    this.flushing = notifyChanged(this.db, 'nodes', ids)
      .catch((err: unknown) => this.o.onError?.(err))
      .finally(() => (this.flushing = undefined))
    return this.flushing
  }

  private arm(): void {
    if (this.flushTimer || this.closed || this.touchedIds.size === 0) return
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined
      void this.flush()
    }, this.flushMs)
    this.flushTimer.unref()
  }

  private received(payload: string): void {
    this.stats.notifications++
    if (this.subscribers.size === 0 || this.closed) return
    let msg: {kind?: unknown; ids?: unknown}
    try {
      msg = JSON.parse(payload) as typeof msg
    } catch {
      return // not ours: the channel is HQ's, but a payload it cannot read is no reason to fail
    }
    const kind = msg.kind as ChangeKind
    if (!CHANGE_KINDS.includes(kind) || !Array.isArray(msg.ids)) return
    let set = this.pending.get(kind)
    if (!set) this.pending.set(kind, (set = new Set()))
    for (const id of msg.ids) if (typeof id === 'string') set.add(id)
    this.pump()
  }

  /** Notifications were lost (the LISTEN connection dropped): streams end, their clients reload their snapshot. */
  private missed(): void {
    this.pending.clear()
    this.endAll()
  }

  /** One load at a time; what arrives meanwhile is coalesced into the next pass. */
  private pump(): void {
    if (this.loading) return
    this.loading = this.drain()
      .catch((err: unknown) => this.o.onError?.(err))
      .finally(() => {
        this.loading = undefined
        if (this.pending.size > 0 && this.subscribers.size > 0 && !this.closed) this.pump()
      })
  }

  private async drain(): Promise<void> {
    while (this.pending.size > 0 && this.subscribers.size > 0) {
      const batch = this.pending
      this.pending = new Map()
      for (const [kind, ids] of batch) {
        if (![...this.subscribers].some((s) => s.types.has(kind))) continue
        let items: unknown[]
        try {
          this.stats.loads++
          items = await this.views[kind]([...ids])
        } catch (err) {
          // These changes cannot be shown: the streams that wanted them end, and their clients reload.
          this.o.onError?.(err)
          for (const s of [...this.subscribers]) {
            if (!s.types.has(kind)) continue
            this.subscribers.delete(s)
            s.end()
          }
          continue
        }
        for (let i = 0; i < items.length; i += MAX_ITEMS_PER_EVENT) {
          const event = {type: kind, [kind]: items.slice(i, i + MAX_ITEMS_PER_EVENT)} as FleetEvent
          const json = JSON.stringify(event)
          this.stats.events++
          for (const s of [...this.subscribers]) if (s.types.has(kind)) s.send(event, json)
        }
      }
    }
  }
}

function closing(): JilError {
  return new JilError('HQ_CLOSING', 'HQ is shutting down', {status: 503, hint: 'connect again in a moment (another replica, or this one restarted)'})
}
