/**
 * The two shapes of background work in jil (DESIGN.md §10: single-flight, stoppable, no timer
 * without an owner), written once:
 *
 * - PassLoop: a pass every N ms on one owned timer. Never two passes at once: a tick that finds one
 *   in flight either joins it ('join') or asks for one more pass right after it ('again', for work
 *   that a wake-up may have added meanwhile). stop() clears the timer and waits for the pass in flight.
 * - Pause: the sleep of a `while (!stopped)` loop that stop() or new work can cut short.
 */

export type PassLoopOptions<T> = {
  everyMs: number
  /** A tick during a pass: join it, or run one more pass after it. */
  overlap: 'join' | 'again'
  /** With 'again': how the results of the passes of one run add up (default: the last one's). */
  combine?: (a: T, b: T) => T
  /** A pass that threw, when started by the timer or kick() (tick() hands the error to its caller). */
  onError?: (err: unknown) => void
  /** The timer fired while a pass was running (callers that count skipped ticks). */
  onOverlap?: () => void
}

export class PassLoop<T> {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<T> | undefined
  private again = false
  private halted = false

  constructor(
    private readonly pass: () => Promise<T>,
    private readonly o: PassLoopOptions<T>,
  ) {}

  /** Starts (or restarts) the timer; the first pass comes after one interval, or at kick(). */
  start(): void {
    this.halted = false
    clearInterval(this.timer)
    this.timer = setInterval(() => {
      if (this.running) {
        this.o.onOverlap?.()
        if (this.o.overlap === 'join') return
      }
      this.kick()
    }, this.o.everyMs)
    this.timer.unref()
  }

  /** A pass now, errors to onError. */
  kick(): void {
    void this.tick().catch((err: unknown) => this.o.onError?.(err))
  }

  /** A pass now (tests move the clock, then tick): joins the one in flight, or follows it ('again'). */
  tick(): Promise<T> {
    if (this.running) {
      if (this.o.overlap === 'again') this.again = true
      return this.running
    }
    this.running = (async (): Promise<T> => {
      try {
        let result: T = await this.pass()
        while (this.again && !this.halted) {
          this.again = false
          const next: T = await this.pass()
          result = this.o.combine ? this.o.combine(result, next) : next
        }
        return result
      } finally {
        this.again = false
        this.running = undefined
      }
    })()
    return this.running
  }

  /** True from stop() on: a pass checks it between steps to end early. */
  get stopped(): boolean {
    return this.halted
  }

  /** Clears the timer and waits for the pass in flight (its failure is not this caller's). */
  async stop(): Promise<void> {
    this.halted = true
    clearInterval(this.timer)
    this.timer = undefined
    await this.running?.catch(() => {})
  }
}

/** An abortable pause: resolves after ms, or at once on wake() (a wake with no sleeper cuts the next sleep). */
export class Pause {
  private wakeFn: (() => void) | undefined
  private pending = false

  sleep(ms: number): Promise<void> {
    if (this.pending) {
      this.pending = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t)
        this.wakeFn = undefined
        resolve()
      }
      const t = setTimeout(done, ms)
      this.wakeFn = done
    })
  }

  wake(): void {
    if (this.wakeFn) this.wakeFn()
    else this.pending = true
  }
}

/** `work`, or a rejection saying `what` took longer than `ms` (the work itself goes on; its failure is ignored). */
export async function withinMs<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  work.catch(() => {})
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)))])
  } finally {
    clearTimeout(timer)
  }
}
