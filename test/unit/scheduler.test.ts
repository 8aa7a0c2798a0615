import {describe, expect, it} from 'vitest'

import {jitter, nextBase, nextRun, Scheduler, type Job, type Timers} from '../../src/daemon/scheduler.js'
import {ManualClock} from '../../src/shared/clock.js'

const flush = () => new Promise<void>((r) => setImmediate(r))

/** Timers that follow a ManualClock: advance() moves the clock and fires what falls due, in order. */
class ManualTimers implements Timers {
  private queue: {id: number; at: number; fn: () => void}[] = []
  private ids = 0
  constructor(private readonly clock: ManualClock) {}
  set(fn: () => void, ms: number): unknown {
    const id = ++this.ids
    this.queue.push({id, at: this.clock.now().getTime() + ms, fn})
    return id
  }
  clear(handle: unknown): void {
    this.queue = this.queue.filter((t) => t.id !== handle)
  }
  get pending(): number {
    return this.queue.length
  }
  async advance(ms: number): Promise<void> {
    const end = this.clock.now().getTime() + ms
    for (;;) {
      const next = [...this.queue].sort((a, b) => a.at - b.at || a.id - b.id).find((t) => t.at <= end)
      if (!next) break
      this.queue = this.queue.filter((t) => t !== next)
      this.clock.set(Math.max(next.at, this.clock.now().getTime()))
      next.fn()
      await flush()
    }
    this.clock.set(end)
    await flush()
  }
  /** Fires every pending timer without moving the clock (a timer that fires early). */
  async fireAllNow(): Promise<void> {
    const due = this.queue
    this.queue = []
    for (const t of due) t.fn()
    await flush()
  }
}

function deferred(): {promise: Promise<void>; resolve: () => void} {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return {promise, resolve}
}

const MIN = 60_000
const HOUR = 60 * MIN

describe('nextBase / nextRun (pure)', () => {
  it('an interval counts from its anchor and stays on its grid', () => {
    const t0 = new Date('2026-03-01T10:00:00Z')
    expect(nextBase({every: MIN}, t0)).toEqual(new Date('2026-03-01T10:01:00Z'))
    expect(nextBase({every: MIN}, new Date('2026-03-01T10:00:30Z'), t0)).toEqual(new Date('2026-03-01T10:01:00Z'))
    // Exactly on a grid point: the next one, never the same instant again.
    expect(nextBase({every: MIN}, new Date('2026-03-01T10:01:00Z'), t0)).toEqual(new Date('2026-03-01T10:02:00Z'))
    // Late by several periods (a suspended machine): the missed ones are skipped, not replayed.
    expect(nextBase({every: MIN}, new Date('2026-03-01T10:05:10Z'), t0)).toEqual(new Date('2026-03-01T10:06:00Z'))
    expect(nextBase({every: 6 * HOUR}, t0)).toEqual(new Date('2026-03-01T16:00:00Z'))
    expect(() => nextBase({every: 0}, t0)).toThrow(RangeError)
  })

  it('daily at 02:00 UTC: later the same day, else the next, across month, year and leap day', () => {
    const at2 = {dailyAtUtc: {hour: 2, minute: 0}}
    expect(nextBase(at2, new Date('2026-01-01T01:59:59.999Z'))).toEqual(new Date('2026-01-01T02:00:00Z'))
    expect(nextBase(at2, new Date('2026-01-01T02:00:00Z'))).toEqual(new Date('2026-01-02T02:00:00Z'))
    expect(nextBase(at2, new Date('2026-01-01T02:00:00.001Z'))).toEqual(new Date('2026-01-02T02:00:00Z'))
    expect(nextBase(at2, new Date('2026-12-31T23:30:00Z'))).toEqual(new Date('2027-01-01T02:00:00Z'))
    expect(nextBase(at2, new Date('2026-01-31T03:00:00Z'))).toEqual(new Date('2026-02-01T02:00:00Z'))
    expect(nextBase(at2, new Date('2028-02-28T05:00:00Z'))).toEqual(new Date('2028-02-29T02:00:00Z'))
    // UTC knows no daylight saving: the night Europe moves its clocks is still 24 h later.
    expect(nextBase(at2, new Date('2026-03-29T02:00:00Z'))).toEqual(new Date('2026-03-30T02:00:00Z'))
    expect(nextBase({dailyAtUtc: {hour: 23, minute: 45}}, new Date('2026-06-30T23:46:00Z'))).toEqual(new Date('2026-07-01T23:45:00Z'))
  })

  it('jitter stays within [0, jitterMs)', () => {
    expect(jitter(0, () => 0.7)).toBe(0)
    expect(jitter(10_000, () => 0)).toBe(0)
    expect(jitter(10_000, () => 0.999_999_999)).toBe(9_999)
    expect(jitter(10_000, () => 0.5)).toBe(5_000)
    for (let i = 0; i < 1000; i++) {
      const j = jitter(10_000)
      expect(j).toBeGreaterThanOrEqual(0)
      expect(j).toBeLessThan(10_000)
    }
    const t0 = new Date('2026-03-01T10:00:00Z')
    const r = nextRun({every: MIN}, t0, 10_000, {random: () => 0.25})
    expect(r.base).toEqual(new Date('2026-03-01T10:01:00Z'))
    expect(r.at).toEqual(new Date('2026-03-01T10:01:02.500Z'))
  })
})

describe('Scheduler', () => {
  function setup(jobs: (runs: string[]) => Job[], o: {jitterMs?: number; random?: () => number; start?: string} = {}) {
    const clock = new ManualClock(o.start ?? '2026-03-01T10:00:00Z')
    const timers = new ManualTimers(clock)
    const runs: string[] = []
    const skipped: string[] = []
    const s = new Scheduler(jobs(runs), {clock, timers, jitterMs: o.jitterMs ?? 0, ...(o.random ? {random: o.random} : {}), onSkip: (j) => skipped.push(j)})
    return {clock, timers, runs, skipped, s}
  }
  const job = (name: string, schedule: Job['schedule'], runs: string[], extra: Partial<Job> = {}): Job => ({
    name,
    schedule,
    run: async () => {
      runs.push(name)
    },
    ...extra,
  })

  it('runs interval jobs every period, a daily job at its UTC time, each after its first period', async () => {
    const {timers, runs, s, clock} = setup((runs) => [job('health', {every: MIN}, runs), job('update', {every: 4 * HOUR}, runs), job('maintenance', {dailyAtUtc: {hour: 2, minute: 0}}, runs)])
    s.start()
    await timers.advance(MIN - 1)
    expect(runs).toEqual([])
    await timers.advance(1)
    expect(runs).toEqual(['health'])
    await timers.advance(MIN)
    expect(runs).toEqual(['health', 'health'])
    // 10:02 → the next day's 02:00 UTC: 15 h 58 min; health ran every minute meanwhile, update every 4 h.
    await timers.advance(15 * HOUR + 58 * MIN)
    expect(clock.now().toISOString()).toBe('2026-03-02T02:00:00.000Z')
    expect(runs.filter((r) => r === 'maintenance')).toHaveLength(1)
    expect(runs.filter((r) => r === 'update')).toHaveLength(4) // 14:00, 18:00, 22:00, 02:00
    expect(runs.filter((r) => r === 'health')).toHaveLength(2 + 15 * 60 + 58)
    await timers.advance(24 * HOUR)
    expect(runs.filter((r) => r === 'maintenance')).toHaveLength(2)
    expect(s.stats().find((j) => j.name === 'maintenance')?.next_at).toBe('2026-03-04T02:00:00.000Z')
    await s.stop()
  })

  it('delays each tick by its jitter, within bounds, without drifting off the grid', async () => {
    const seen: number[] = []
    let r = 0
    const randoms = [0.5, 0.1, 0.9]
    const {timers, clock, s} = setup(
      () => [
        {
          name: 'health',
          schedule: {every: MIN},
          run: async () => {
            seen.push(clock.now().getTime())
          },
        },
      ],
      {jitterMs: 10_000, random: () => randoms[r++ % randoms.length]!},
    )
    const t0 = clock.now().getTime()
    s.start()
    await timers.advance(4 * MIN)
    expect(seen.map((t) => t - t0)).toEqual([MIN + 5000, 2 * MIN + 1000, 3 * MIN + 9000])
    await s.stop()
  })

  it('runs a runAtStart job at once', async () => {
    const {timers, runs, s} = setup((runs) => [job('update', {every: 4 * HOUR}, runs, {runAtStart: true}), job('security', {every: 6 * HOUR}, runs)])
    s.start()
    await timers.advance(0)
    expect(runs).toEqual(['update'])
    await timers.advance(4 * HOUR)
    expect(runs).toEqual(['update', 'update'])
    await s.stop()
  })

  it('single-flight: a tick during a run is skipped and counted, runNow shares the lock, nothing stacks', async () => {
    let gate = deferred()
    let started = 0
    const {timers, s, skipped} = setup(() => [
      {
        name: 'update',
        schedule: {every: MIN},
        run: async () => {
          started++
          await gate.promise
        },
      },
    ])
    s.start()
    await timers.advance(MIN)
    expect(started).toBe(1)
    await timers.advance(MIN)
    await timers.advance(MIN)
    expect(started).toBe(1)
    expect(skipped).toEqual(['update', 'update'])
    expect(await s.runNow('update')).toEqual({ran: false, reason: 'busy'})
    expect(s.stats()[0]).toMatchObject({name: 'update', running: true, runs: 0, skips: 3})
    const first = gate
    gate = deferred()
    first.resolve()
    await timers.advance(0)
    expect(s.stats()[0]).toMatchObject({running: false, runs: 1})
    // The schedule goes on; a manual run takes the lock and a tick meanwhile is skipped.
    const manual = s.runNow('update')
    expect(started).toBe(2)
    await timers.advance(MIN)
    expect(started).toBe(2)
    expect(skipped).toHaveLength(4)
    gate.resolve()
    expect(await manual).toEqual({ran: true})
    await timers.advance(MIN)
    expect(started).toBe(3)
    await s.stop()
  })

  it('a failing run is counted and the schedule goes on', async () => {
    let n = 0
    const {timers, s} = setup(() => [
      {
        name: 'security',
        schedule: {every: MIN},
        run: async () => {
          n++
          throw new Error('boom')
        },
      },
    ])
    s.start()
    await timers.advance(3 * MIN)
    expect(n).toBe(3)
    expect(s.stats()[0]).toMatchObject({runs: 3, failures: 3})
    await s.stop()
  })

  it('stop() cancels the timers and resolves only when the run in flight has finished', async () => {
    const gate = deferred()
    let started = 0
    let finished = 0
    const {timers, s} = setup(() => [
      {
        name: 'update',
        schedule: {every: MIN},
        run: async () => {
          started++
          await gate.promise
          finished++
        },
      },
      {name: 'health', schedule: {every: MIN}, run: async () => {}},
    ])
    s.start()
    await timers.advance(MIN)
    expect(started).toBe(1)
    let stopped = false
    const stopping = s.stop().then(() => (stopped = true))
    expect(timers.pending).toBe(0)
    await timers.advance(5 * MIN)
    expect(stopped).toBe(false)
    expect(started).toBe(1)
    expect(await s.runNow('health')).toEqual({ran: false, reason: 'stopped'})
    gate.resolve()
    await stopping
    expect(stopped).toBe(true)
    expect(finished).toBe(1)
    await timers.advance(5 * MIN)
    expect(started).toBe(1)
    expect(timers.pending).toBe(0)
  })

  it('a timer that fires before its time (clock behind) re-arms instead of running early', async () => {
    const {timers, runs, s} = setup((runs) => [job('health', {every: MIN}, runs)])
    s.start()
    await timers.advance(30_000)
    await timers.fireAllNow()
    expect(runs).toEqual([])
    expect(timers.pending).toBe(1)
    await timers.advance(30_000)
    expect(runs).toEqual(['health'])
    await s.stop()
  })

  it('a wall clock stepped back while waiting plans again from now instead of holding the job', async () => {
    const {timers, runs, s, clock} = setup((runs) => [job('health', {every: MIN}, runs)])
    s.start()
    await timers.advance(30_000)
    clock.advance(-HOUR)
    await timers.fireAllNow()
    expect(runs).toEqual([])
    await timers.advance(MIN)
    expect(runs).toEqual(['health'])
    await s.stop()
  })

  it('refuses a job scheduled twice and an unknown runNow', async () => {
    const clock = new ManualClock()
    expect(() => new Scheduler([job('a', {every: 1}, []), job('a', {every: 1}, [])], {clock, jitterMs: 0})).toThrow(/twice/)
    const s = new Scheduler([], {clock, jitterMs: 0})
    expect(await s.runNow('nope')).toEqual({ran: false, reason: 'unknown'})
  })
})
