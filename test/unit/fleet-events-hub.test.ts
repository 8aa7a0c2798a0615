import {Writable} from 'node:stream'

import {describe, expect, it} from 'vitest'

import {changePayloads, MAX_PAYLOAD_BYTES} from '../../src/hq/events/hub.js'
import {SseStream} from '../../src/hq/events/routes.js'

describe('change payloads', () => {
  it('stay under the NOTIFY limit, carry every id once, and nothing for no ids', () => {
    // Long, multi-byte ids: a byte count, not a character count, decides where to split.
    const ids = Array.from({length: 3000}, (_, i) => `CH-ZÜRICH-${String(i).padStart(5, '0')}`)
    const payloads = changePayloads('nodes', [...ids, ...ids.slice(0, 10)])
    expect(payloads.length).toBeGreaterThan(1)
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(MAX_PAYLOAD_BYTES)
    const parsed = payloads.map((p) => JSON.parse(p) as {kind: string; ids: string[]})
    expect(new Set(parsed.map((p) => p.kind))).toEqual(new Set(['nodes']))
    expect(parsed.flatMap((p) => p.ids)).toEqual(ids)
    expect(changePayloads('alerts', [])).toEqual([])
    expect(changePayloads('alerts', ['al_1'])).toEqual(['{"kind":"alerts","ids":["al_1"]}'])
  })
})

/** A client that stopped reading: its socket takes nothing, so what is written waits in buffers. */
function stalledClient(): Writable & {destroyedByStream: boolean} {
  const w = new Writable({highWaterMark: 16 * 1024, write: () => {}}) as Writable & {destroyedByStream: boolean}
  w.destroyedByStream = false
  const destroy = w.destroy.bind(w)
  w.destroy = (err?: Error) => {
    w.destroyedByStream = true
    return destroy(err)
  }
  return w
}

describe('an SSE stream', () => {
  it('frames events and comments as text/event-stream wants them, and ends cleanly', async () => {
    const chunks: string[] = []
    const client = new Writable({write: (c: Buffer, _e, cb) => (chunks.push(c.toString()), cb())})
    const s = new SseStream(client, 1024 * 1024)
    s.body.pipe(client)
    s.event('ready', '{"type":"ready","at":"2026-11-27T12:00:00.000Z"}')
    s.comment('keepalive')
    s.event('alerts', '{"type":"alerts","alerts":[]}')
    s.end()
    s.event('alerts', '{"type":"alerts","alerts":[]}') // after the end: dropped, never a write-after-end error
    await new Promise((r) => client.once('finish', r))
    expect(chunks.join('')).toBe('event: ready\ndata: {"type":"ready","at":"2026-11-27T12:00:00.000Z"}\n\n: keepalive\n\nevent: alerts\ndata: {"type":"alerts","alerts":[]}\n\n')
  })

  it('drops a client that falls further behind than the bound instead of buffering without end', () => {
    const client = stalledClient()
    let dropped = 0
    const s = new SseStream(client, 256 * 1024, () => dropped++)
    s.body.pipe(client)
    const event = JSON.stringify({type: 'nodes', nodes: [{id: 'x'.repeat(10_000)}]})
    let writes = 0
    while (!s.ended && writes < 1000) {
      s.event('nodes', event)
      writes++
    }
    expect(s.ended).toBe(true)
    expect(dropped).toBe(1)
    expect(client.destroyedByStream).toBe(true)
    expect(s.body.destroyed).toBe(true)
    // Dropped near the bound, not after holding all 1,000 events (10 MB).
    expect(writes * event.length).toBeLessThan(2 * 256 * 1024)
    s.event('nodes', event)
    expect(dropped).toBe(1)
  })
})
