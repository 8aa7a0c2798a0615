import type {Clock} from '../shared/clock.js'

/**
 * The daemon's job loop (DESIGN.md §10, Watchtower's shape): each job runs on its schedule with a
 * random jitter, single-flight (a tick that finds the previous run still going is skipped and
 * counted, never stacked; a manual `runNow` shares the same lock), and `stop()` cancels every timer
 * and resolves once the runs in flight have finished. Time comes from the injected clock and timers,
 * so tests drive it with a ManualClock and never sleep.
 */

/** Every N ms, or daily at HH:MM UTC. */
export type Schedule = {every: number} | {dailyAtUtc: {hour: number; minute: number}}

const DAY_MS = 86_400_000

/**
 * The next base time of a schedule strictly after `now`, before jitter. An interval stays on the
 * grid of its `anchor` (the previous base, or the start): the first `anchor + k·every` (k ≥ 1)
 * after now, so a late tick (a suspended machine) skips the periods it missed instead of running
 * them all. Daily is the next HH:MM in UTC, which has no daylight saving: always 24 h apart.
 */
export function nextBase(schedule: Schedule, now: Date, anchor: Date = now): Date {
  const t = now.getTime()
  if ('every' in schedule) {
    if (!(schedule.every > 0)) throw new RangeError(`schedule interval must be positive, got ${schedule.every}`)
    const a = anchor.getTime()
    const k = Math.max(1, Math.floor((t - a) / schedule.every) + 1)
    return new Date(a + k * schedule.every)
  }
  const {hour, minute} = schedule.dailyAtUtc
  let at = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), hour, minute)
  if (at <= t) at += DAY_MS
  return new Date(at)
}

/** A random delay in [0, jitterMs): spreads a fleet's calls to HQ over a window instead of one instant. */
export function jitter(jitterMs: number, random: () => number = Math.random): number {
  if (!(jitterMs > 0)) return 0
  return Math.min(jitterMs - 1, Math.floor(random() * jitterMs))
}

/** When a job runs next: its next base after `now` plus a jitter. */
export function nextRun(schedule: Schedule, now: Date, jitterMs: number, o: {anchor?: Date; random?: () => number} = {}): {base: Date; at: Date} {
  const base = nextBase(schedule, now, o.anchor)
  return {base, at: new Date(base.getTime() + jitter(jitterMs, o.random))}
}

/** setTimeout/clearTimeout as the scheduler sees them (tests pass timers that follow a ManualClock). */
export type Timers = {
  set(fn: () => void, ms: number): unknown
  clear(handle: unknown): void
}

// Node's timers hold at most 2^31-1 ms (~24.8 days); a longer wait is armed in steps.
const MAX_TIMER_MS = 2 ** 31 - 1

export const systemTimers: Timers = {
  set: (fn, ms) => setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS)),
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
}

export type Job = {
  name: string
  schedule: Schedule
  /** Run once as soon as the scheduler starts (a fresh node gets its stack at once). */
  runAtStart?: boolean
  /** One run. Its failures are its own to report; a throw is logged and counted as a failure. */
  run: () => Promise<void>
}

export type JobStats = {
  name: string
  running: boolean
  runs: number
  failures: number
  skips: number
  next_at: string | null
}

/** Why a run did not start. */
export type RunRefusal = 'busy' | 'stopped' | 'unknown'

type SchedulerLog = {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export type SchedulerOptions = {
  clock: Clock
  timers?: Timers
  jitterMs: number
  random?: () => number
  log?: SchedulerLog
  /** Called for every tick that found its job still running. */
  onSkip?: (job: string) => void
}

type JobState = {
  job: Job
  base: Date | undefined
  at: Date | undefined
  timer: unknown
  inFlight: Promise<void> | undefined
  runs: number
  failures: number
  skips: number
}

const quiet: SchedulerLog = {info() {}, warn() {}, error() {}}

export class Scheduler {
  private readonly jobs = new Map<string, JobState>()
  private readonly timers: Timers
  private readonly log: SchedulerLog
  private started = false
  private stopping: Promise<void> | undefined

  constructor(
    jobs: readonly Job[],
    private readonly o: SchedulerOptions,
  ) {
    this.timers = o.timers ?? systemTimers
    this.log = o.log ?? quiet
    for (const job of jobs) {
      if (this.jobs.has(job.name)) throw new Error(`job ${job.name} is scheduled twice`)
      this.jobs.set(job.name, {job, base: undefined, at: undefined, timer: undefined, inFlight: undefined, runs: 0, failures: 0, skips: 0})
    }
  }

  /** Arms every job's first tick and starts the runAtStart ones. Idempotent. */
  start(): void {
    if (this.started || this.stopping) return
    this.started = true
    const now = this.o.clock.now()
    for (const s of this.jobs.values()) {
      if (s.job.runAtStart) void this.begin(s)
      this.arm(s, now, now)
    }
  }

  /**
   * Runs a job now, outside its schedule, under the same single-flight lock: resolves when the run
   * has finished, or at once with the reason it did not start (already running, stopping).
   */
  async runNow(name: string): Promise<{ran: true} | {ran: false; reason: RunRefusal}> {
    const s = this.jobs.get(name)
    if (!s) return {ran: false, reason: 'unknown'}
    if (this.stopping) return {ran: false, reason: 'stopped'}
    if (s.inFlight) {
      this.skip(s, 'manual')
      return {ran: false, reason: 'busy'}
    }
    await this.begin(s)
    return {ran: true}
  }

  /** Cancels every timer; resolves when the runs in flight have finished. No run starts after this. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const s of this.jobs.values()) {
        if (s.timer !== undefined) this.timers.clear(s.timer)
        s.timer = undefined
        s.at = undefined
      }
      const inFlight = [...this.jobs.values()].flatMap((s) => (s.inFlight ? [s.inFlight] : []))
      if (inFlight.length > 0) this.log.info({jobs: [...this.jobs.values()].filter((s) => s.inFlight).map((s) => s.job.name)}, 'waiting for runs in flight')
      await Promise.all(inFlight)
    })()
    return this.stopping
  }

  stats(): JobStats[] {
    return [...this.jobs.values()].map((s) => ({
      name: s.job.name,
      running: s.inFlight !== undefined,
      runs: s.runs,
      failures: s.failures,
      skips: s.skips,
      next_at: s.at?.toISOString() ?? null,
    }))
  }

  /** The job's next tick after `now`, on the grid of `anchor`. */
  private arm(s: JobState, now: Date, anchor: Date): void {
    const {base, at} = nextRun(s.job.schedule, now, this.o.jitterMs, {anchor, ...(this.o.random ? {random: this.o.random} : {})})
    s.base = base
    s.at = at
    this.wait(s)
  }

  /**
   * Sets the timer for s.at. Timers may fire early or be capped, so the clock has the last word; a
   * wall clock stepped back (NTP) would otherwise hold the job for as long as it went back, so a
   * timer that fires at a time before the one it was set at plans again from now.
   */
  private wait(s: JobState): void {
    const at = s.at
    if (!at || this.stopping) return
    const setAt = this.o.clock.now().getTime()
    s.timer = this.timers.set(
      () => {
        s.timer = undefined
        if (this.stopping) return
        const now = this.o.clock.now()
        if (now.getTime() < setAt) return this.arm(s, now, now)
        if (now.getTime() < at.getTime()) return this.wait(s)
        this.tick(s, now)
      },
      Math.max(0, Math.min(at.getTime() - setAt, MAX_TIMER_MS)),
    )
  }

  private tick(s: JobState, now: Date): void {
    if (s.inFlight) this.skip(s, 'schedule')
    else void this.begin(s)
    this.arm(s, now, s.base ?? now)
  }

  private skip(s: JobState, by: 'schedule' | 'manual'): void {
    s.skips++
    this.log.warn({job: s.job.name, by, skips: s.skips}, 'previous run still in flight: tick skipped')
    this.o.onSkip?.(s.job.name)
  }

  /** Starts a run and holds the job's lock until it settles. */
  private begin(s: JobState): Promise<void> {
    const run = (async () => {
      try {
        await s.job.run()
      } catch (err) {
        s.failures++
        this.log.error({job: s.job.name, err}, 'run failed')
      } finally {
        s.runs++
        s.inFlight = undefined
      }
    })()
    s.inFlight = run
    return run
  }
}
