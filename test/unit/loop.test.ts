import {afterEach, describe, expect, it, vi} from 'vitest'

import {Pause, PassLoop, withinMs} from '../../src/shared/loop.js'

/** A pass that waits until the test lets it finish, counting how many ran. */
function gatedPass() {
  let started = 0
  let release: (() => void) | undefined
  const pass = async () => {
    started++
    await new Promise<void>((r) => (release = r))
    return started
  }
  return {pass, started: () => started, finish: () => release?.()}
}

const settle = () => new Promise((r) => setImmediate(r))

describe('PassLoop', () => {
  afterEach(() => void vi.useRealTimers())

  it("'join': a tick during a pass gets that pass, never a second one", async () => {
    const g = gatedPass()
    const loop = new PassLoop(g.pass, {everyMs: 1000, overlap: 'join'})
    const a = loop.tick()
    const b = loop.tick()
    expect(b).toBe(a)
    await settle()
    g.finish()
    expect(await a).toBe(1)
    expect(g.started()).toBe(1)
  })

  it("'again': ticks during a pass ask for exactly one more pass, results combined", async () => {
    const g = gatedPass()
    const loop = new PassLoop(g.pass, {everyMs: 1000, overlap: 'again', combine: (x, y) => x + y})
    const a = loop.tick()
    loop.tick()
    loop.tick()
    await settle()
    g.finish() // pass 1 done; one more pass starts
    await settle()
    expect(g.started()).toBe(2)
    g.finish()
    // 1 (first pass's count) + 2 (second pass's count)
    expect(await a).toBe(3)
    // Nothing asked meanwhile: the next tick is a fresh run of one pass.
    const c = loop.tick()
    await settle()
    g.finish()
    expect(await c).toBe(3)
  })

  it('the timer skips (join) or follows (again) a pass in flight, and reports the overlap', async () => {
    vi.useFakeTimers()
    const g = gatedPass()
    const overlaps = vi.fn()
    const loop = new PassLoop(g.pass, {everyMs: 100, overlap: 'join', onOverlap: overlaps})
    loop.start()
    await vi.advanceTimersByTimeAsync(100)
    expect(g.started()).toBe(1)
    await vi.advanceTimersByTimeAsync(300)
    expect(g.started()).toBe(1)
    expect(overlaps).toHaveBeenCalledTimes(3)
    g.finish()
    await vi.advanceTimersByTimeAsync(100)
    expect(g.started()).toBe(2)
    const stopping = loop.stop()
    g.finish()
    await stopping
    await vi.advanceTimersByTimeAsync(1000)
    expect(g.started()).toBe(2)
  })

  it('stop() waits for the pass in flight, marks the loop stopped, and ends an again-run early', async () => {
    const g = gatedPass()
    const loop = new PassLoop(g.pass, {everyMs: 1000, overlap: 'again'})
    const run = loop.tick()
    loop.tick()
    await settle()
    let stopped = false
    const stopping = loop.stop().then(() => (stopped = true))
    expect(loop.stopped).toBe(true)
    await settle()
    expect(stopped).toBe(false)
    g.finish()
    await stopping
    // The pass asked for by the second tick did not run: the loop was stopping.
    expect(g.started()).toBe(1)
    expect(await run).toBe(1)
  })

  it('hands a failing pass to onError when kicked, and to the caller when ticked; the next pass runs', async () => {
    let n = 0
    const errors: unknown[] = []
    const loop = new PassLoop(
      async () => {
        if (++n === 1) throw new Error('first pass fails')
        return n
      },
      {everyMs: 1000, overlap: 'join', onError: (e) => errors.push(e)},
    )
    loop.kick()
    await settle()
    expect(errors).toHaveLength(1)
    await expect(loop.tick()).resolves.toBe(2)
  })
})

describe('Pause', () => {
  it('wakes a sleeper at once, and a wake with no sleeper cuts the next sleep', async () => {
    const p = new Pause()
    let woke = false
    const s = p.sleep(60_000).then(() => (woke = true))
    await settle()
    expect(woke).toBe(false)
    p.wake()
    await s
    expect(woke).toBe(true)
    p.wake()
    await p.sleep(60_000) // returns at once: the wake was kept
  })
})

describe('withinMs', () => {
  it('gives the work its result, or refuses once the time is up', async () => {
    await expect(withinMs(Promise.resolve(7), 1000, 'the engine')).resolves.toBe(7)
    await expect(withinMs(new Promise(() => {}), 5, 'the bus')).rejects.toThrow('the bus did not answer within 5 ms')
    await expect(withinMs(Promise.reject(new Error('refused')), 1000, 'the bus')).rejects.toThrow('refused')
  })
})
