import {systemClock, type Clock} from '../../shared/clock.js'
import {messageOf} from '../../shared/errors.js'
import type {FleetEvent} from '../../shared/fleet-events.js'
import {applyAll, emptyFleet, fromSnapshot, type FleetState} from '../model.js'
import type {FleetSource} from '../source.js'

/** connecting: before the first snapshot; live: the stream runs; stale: it dropped and we are reconnecting. */
export type FeedPhase = 'connecting' | 'live' | 'stale'

/** What the views get from the live stream. */
export type Feed = {
  fleet: FleetState
  phase: FeedPhase
  /** The stream dropped: what is on screen may be out of date. */
  stale: boolean
  /** When the stream dropped (kept across failed reconnects), null while live. */
  since: Date | null
  /** Why the last connection ended or failed. */
  error: string | null
  /** Reconnects so far. */
  reconnects: number
}

export type FeedOptions = {
  /** Tells `since` (default: the system clock). */
  clock?: Clock
  /** Least time between two updates of the views (default 100 ms: at most 10 frames per second, however fast events come). */
  throttleMs?: number
  /** Reconnect delays: initialMs, doubling per failed attempt up to maxMs (defaults 500 ms and 15 s). */
  backoff?: {initialMs: number; maxMs: number}
  /** Waits before a reconnect; rejects when the signal aborts (tests pass one that records the delays). */
  wait?: (ms: number, signal: AbortSignal) => Promise<void>
  /** A monotonic clock in milliseconds for the throttle (default performance.now). */
  monotonic?: () => number
  /** Called as each update is handed to the view, before it renders (bench/top times frames from here). */
  onUpdate?: (feed: Feed) => void
}

export const initialFeed: Feed = {fleet: emptyFleet, phase: 'connecting', stale: false, since: null, error: null, reconnects: 0}

export function backoffMs(attempt: number, b: {initialMs: number; maxMs: number}): number {
  return Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt, 30))
}

function abortableWait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(t)
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, {once: true})
  })
}

/**
 * The live feed behind `useFleet`, apart from React: subscribes, loads the snapshot after each
 * `ready` (events that arrive meanwhile wait in the stream and are applied on top), applies events in
 * batches, and reconnects with backoff when the stream ends or fails. It owns one timer, the
 * throttle's: changes since the last update are handed on at most once per `throttleMs`.
 */
export class FeedLoop {
  private fleet: FleetState = emptyFleet
  private queue: FleetEvent[] = []
  private phase: FeedPhase = 'connecting'
  private since: Date | null = null
  private error: string | null = null
  private reconnects = 0
  private timer: ReturnType<typeof setTimeout> | null = null
  private lastEmit = -Infinity
  private readonly ac = new AbortController()
  private readonly clock: Clock
  private readonly throttleMs: number
  private readonly backoff: {initialMs: number; maxMs: number}
  private readonly wait: (ms: number, signal: AbortSignal) => Promise<void>
  private readonly monotonic: () => number
  private readonly onUpdate: ((feed: Feed) => void) | undefined

  constructor(
    private readonly source: FleetSource,
    private readonly onFeed: (feed: Feed) => void,
    o: FeedOptions = {},
  ) {
    this.clock = o.clock ?? systemClock
    this.throttleMs = o.throttleMs ?? 100
    this.backoff = o.backoff ?? {initialMs: 500, maxMs: 15_000}
    this.wait = o.wait ?? abortableWait
    this.monotonic = o.monotonic ?? (() => performance.now())
    this.onUpdate = o.onUpdate
  }

  /** Runs until stop(); never rejects. */
  async run(): Promise<void> {
    const signal = this.ac.signal
    let attempt = 0
    while (!signal.aborted) {
      try {
        for await (const e of this.source.events(signal)) {
          if (signal.aborted) return
          if (e.type === 'ready') {
            const snap = await this.source.snapshot(signal)
            if (signal.aborted) return
            this.fleet = fromSnapshot(snap, this.fleet.rev + 1)
            this.queue = []
            this.phase = 'live'
            this.since = null
            this.error = null
            attempt = 0
            this.changed()
          } else if (this.phase === 'live') {
            this.queue.push(e)
            this.changed()
          }
          // Before the first ready there is no snapshot to apply a change to: the snapshot will hold it.
        }
        if (signal.aborted) return
        this.dropped('the live stream ended')
      } catch (err) {
        if (signal.aborted) return
        this.dropped(messageOf(err))
      }
      try {
        await this.wait(backoffMs(attempt++, this.backoff), signal)
      } catch {
        return
      }
      this.reconnects++
    }
  }

  stop(): void {
    this.ac.abort()
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }

  private dropped(error: string): void {
    if (this.phase !== 'stale') this.since = this.clock.now()
    this.phase = 'stale'
    this.error = error
    this.changed()
  }

  /** Something changed: hand it on now if the last update is throttleMs old, else when it will be. */
  private changed(): void {
    if (this.timer || this.ac.signal.aborted) return
    const delay = Math.max(0, this.lastEmit + this.throttleMs - this.monotonic())
    this.timer = setTimeout(() => this.flush(), delay)
  }

  private flush(): void {
    this.timer = null
    if (this.queue.length > 0) {
      this.fleet = applyAll(this.fleet, this.queue)
      this.queue = []
    }
    this.lastEmit = this.monotonic()
    const feed: Feed = {fleet: this.fleet, phase: this.phase, stale: this.phase === 'stale', since: this.since, error: this.error, reconnects: this.reconnects}
    this.onUpdate?.(feed)
    this.onFeed(feed)
  }
}
