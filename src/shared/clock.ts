/** A Clock tells the time. Logic takes one as a parameter so schedules and expiries are tested by moving it. */
export interface Clock {
  now(): Date
}

export const systemClock: Clock = {now: () => new Date()}

/** A clock that only moves when told to (tests). */
export class ManualClock implements Clock {
  private t: number
  constructor(start: Date | string | number = '2026-01-01T00:00:00Z') {
    this.t = new Date(start).getTime()
  }
  now(): Date {
    return new Date(this.t)
  }
  advance(ms: number): void {
    this.t += ms
  }
  set(to: Date | string | number): void {
    this.t = new Date(to).getTime()
  }
}
