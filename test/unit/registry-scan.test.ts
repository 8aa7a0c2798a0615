import {describe, expect, it} from 'vitest'

import {RegistryScan} from '../../src/hq/alerts/registry-scan.js'
import {parseBearerChallenge} from '../../src/hq/registry/oci.js'
import {grant, hqGrant, parseScopes} from '../../src/hq/registry/token.js'
import {ManualClock} from '../../src/shared/clock.js'

const D1 = `sha256:${'1'.repeat(64)}`
const D2 = `sha256:${'2'.repeat(64)}`
const MIN = 60_000

type Item = {repository: string; tag: string; digest: string}

/** An inventory source the test answers by hand: each walk waits until the test settles it. */
function source() {
  const walks: {resolve: (items: Item[]) => void; reject: (err: Error) => void; signal: AbortSignal | undefined}[] = []
  return {
    walks,
    client: async () => ({
      inventory: (signal?: AbortSignal) =>
        new Promise<Item[]>((resolve, reject) => {
          walks.push({resolve, reject, signal})
          signal?.addEventListener('abort', () => reject(new Error('aborted')))
        }),
    }),
  }
}

/** Lets the scan's promise callbacks run. */
const settle = () => new Promise((r) => setImmediate(r))

describe('the registry scan behind image-unsigned', () => {
  it('settled() waits for the walk in flight and never starts one', async () => {
    const clock = new ManualClock()
    const src = source()
    const scan = new RegistryScan('127.0.0.1:5000', src.client, clock, {everyMs: 10 * MIN})
    await scan.settled()
    expect(src.walks).toHaveLength(0)
    expect(scan.current()).toBeNull()
    await settle()
    let ended = false
    const waiting = scan.settled().then(() => (ended = true))
    await settle()
    expect(ended).toBe(false)
    src.walks[0]!.resolve([{repository: 'jil/api', tag: 'v1', digest: D1}])
    await waiting
    expect(scan.current()?.digests).toHaveLength(1)
    // The walk has ended: nothing in flight, and waiting again starts nothing.
    await scan.settled()
    await settle()
    expect(src.walks).toHaveLength(1)
  })

  it('never makes the evaluation wait: the first call starts a walk and returns nothing; later calls return the last completed walk, one digest per repository', async () => {
    const clock = new ManualClock()
    const src = source()
    const scan = new RegistryScan('127.0.0.1:5000', src.client, clock, {everyMs: 10 * MIN})
    expect(scan.current()).toBeNull()
    await settle()
    expect(src.walks).toHaveLength(1)
    // Single-flight: a walk in flight is joined, never stacked.
    expect(scan.current()).toBeNull()
    void scan.refresh()
    await settle()
    expect(src.walks).toHaveLength(1)

    src.walks[0]!.resolve([
      {repository: 'jil/api', tag: 'v2', digest: D1},
      {repository: 'jil/api', tag: 'latest', digest: D1},
      {repository: 'jil/api', tag: 'v1', digest: D2},
      {repository: 'jil/copy', tag: 'v2', digest: D1},
    ])
    await scan.refresh()
    expect(scan.current()).toEqual({
      at: clock.now(),
      digests: [
        {repository: '127.0.0.1:5000/jil/api', tags: ['latest', 'v2'], digest: D1},
        {repository: '127.0.0.1:5000/jil/api', tags: ['v1'], digest: D2},
        {repository: '127.0.0.1:5000/jil/copy', tags: ['v2'], digest: D1},
      ],
    })
  })

  it('walks again only once the interval has passed since the last walk began', async () => {
    const clock = new ManualClock()
    const src = source()
    const scan = new RegistryScan('r:1', src.client, clock, {everyMs: 10 * MIN})
    scan.current()
    await settle()
    src.walks[0]!.resolve([{repository: 'a/b', tag: 't', digest: D1}])
    await scan.refresh()
    clock.advance(10 * MIN - 1)
    scan.current()
    await settle()
    expect(src.walks).toHaveLength(1)
    clock.advance(1)
    expect(scan.current()?.digests).toHaveLength(1)
    await settle()
    expect(src.walks).toHaveLength(2)
    src.walks[1]!.resolve([])
    await scan.refresh()
    expect(scan.current()?.digests).toEqual([])
  })

  it('a failed walk keeps the previous result and is reported; stop() cuts a walk short without reporting it', async () => {
    const clock = new ManualClock()
    const src = source()
    const errors: unknown[] = []
    const scan = new RegistryScan('r:1', src.client, clock, {everyMs: MIN, onError: (e) => errors.push(e)})
    void scan.refresh()
    await settle()
    src.walks[0]!.resolve([{repository: 'a/b', tag: 't', digest: D1}])
    await scan.refresh()
    const first = scan.current()

    clock.advance(MIN)
    void scan.refresh()
    await settle()
    src.walks[1]!.reject(new Error('connection refused'))
    await scan.refresh()
    expect(errors).toEqual([new Error('connection refused')])
    expect(scan.current()).toBe(first)

    clock.advance(MIN)
    scan.current()
    await settle()
    expect(src.walks).toHaveLength(3)
    await scan.stop()
    expect(src.walks[2]!.signal?.aborted).toBe(true)
    expect(errors).toHaveLength(1)
    // Stopped: no walk starts again.
    clock.advance(MIN)
    expect(scan.current()).toBe(first)
    await settle()
    expect(src.walks).toHaveLength(3)
  })
})

describe('registry token scopes', () => {
  it('users and nodes never get the catalog from the token route; HQ grants itself the catalog and pulls, never a push', () => {
    const wanted = parseScopes('registry:catalog:* repository:jil/api:pull,push')
    expect(wanted).toEqual([
      {type: 'registry', name: 'catalog', actions: ['*']},
      {type: 'repository', name: 'jil/api', actions: ['pull', 'push']},
    ])
    const admin = {kind: 'user' as const, name: 'alice', role: 'admin', serial: '1', notAfter: new Date()}
    const node = {kind: 'node' as const, id: 'CH-ZUG-01', zone: 'CH/FINMA', serial: '2', notAfter: new Date()}
    expect(grant(admin, wanted)).toEqual([
      {type: 'registry', name: 'catalog', actions: []},
      {type: 'repository', name: 'jil/api', actions: ['pull', 'push']},
    ])
    expect(grant(node, wanted)).toEqual([
      {type: 'registry', name: 'catalog', actions: []},
      {type: 'repository', name: 'jil/api', actions: ['pull']},
    ])
    expect(hqGrant(wanted)).toEqual([
      {type: 'registry', name: 'catalog', actions: ['*']},
      {type: 'repository', name: 'jil/api', actions: ['pull']},
    ])
    for (const bad of ['registry:catalog:pull', 'registry:other:*', 'repository:jil/api:delete']) {
      expect(() => parseScopes(bad), bad).toThrow(expect.objectContaining({code: 'SCOPE_INVALID'}))
    }
  })

  it('reads a registry\'s Bearer challenge', () => {
    expect(parseBearerChallenge('Bearer realm="https://hq:8443/v1/registry/token",service="jil-registry",scope="registry:catalog:*"')).toEqual({
      realm: 'https://hq:8443/v1/registry/token',
      service: 'jil-registry',
      scope: 'registry:catalog:*',
    })
    expect(parseBearerChallenge(['Basic realm="x"', 'Bearer realm="r",service=s,error="insufficient_scope"'])).toEqual({realm: 'r', service: 's', error: 'insufficient_scope'})
    expect(parseBearerChallenge('Basic realm="Registry"')).toBeUndefined()
    expect(parseBearerChallenge(undefined)).toBeUndefined()
  })
})
