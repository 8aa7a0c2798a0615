import {PassThrough} from 'node:stream'

import {Type, type Static} from '@sinclair/typebox'
import type {FastifyInstance} from 'fastify'
import {Counter, Gauge, type Registry} from 'prom-client'

import type {Clock} from '../../shared/clock.js'
import {FLEET_EVENTS_KEEPALIVE_MS, type FleetEventType} from '../../shared/fleet-events.js'
import {CHANGE_KINDS, type ChangeKind, type FleetEventHub} from './hub.js'

/** A client further behind than this (bytes written, not yet taken) is dropped rather than buffered without bound. */
export const MAX_STREAM_BUFFER_BYTES = 4 * 1024 * 1024

export type EventRouteOptions = {
  /** How often an idle stream gets a `: keepalive` comment (default FLEET_EVENTS_KEEPALIVE_MS). */
  keepaliveMs?: number
  /** The most a stream may hold for a slow client (default MAX_STREAM_BUFFER_BYTES). */
  maxBufferBytes?: number
}

const KIND = `(${CHANGE_KINDS.join('|')})`
const EventsQuery = Type.Object({types: Type.Optional(Type.String({pattern: `^${KIND}(,${KIND})*$`}))}, {additionalProperties: false})

/** The response side of one event stream: where its bytes wait, and how far behind its client is. */
type Sink = {readonly writableLength: number; destroy(): void}

/**
 * One text/event-stream response: SSE framing over a PassThrough that fastify sends. Every write
 * checks how much the client has not taken yet (the PassThrough's buffers and the response's); past
 * the bound the stream is dropped (the socket destroyed, the client reconnects and reloads) instead
 * of memory growing with a client that stopped reading.
 */
export class SseStream {
  readonly body = new PassThrough()
  private done = false

  constructor(
    private readonly sink: Sink,
    private readonly maxBufferBytes: number,
    private readonly onDrop: () => void = () => {},
  ) {}

  get ended(): boolean {
    return this.done
  }

  /** Bytes written that the client has not read yet. */
  get buffered(): number {
    return this.body.writableLength + this.body.readableLength + this.sink.writableLength
  }

  event(type: FleetEventType, json: string): void {
    this.write(`event: ${type}\ndata: ${json}\n\n`)
  }

  comment(text: string): void {
    this.write(`: ${text}\n\n`)
  }

  /** Ends the stream cleanly: what was written still reaches the client. */
  end(): void {
    if (this.done) return
    this.done = true
    this.body.end()
  }

  private write(s: string): void {
    if (this.done) return
    this.body.write(s)
    if (this.buffered > this.maxBufferBytes) this.drop()
  }

  private drop(): void {
    this.done = true
    this.body.destroy()
    this.sink.destroy()
    this.onDrop()
  }
}

/**
 * `GET /v1/events`: the live fleet stream for `jil top` (src/shared/fleet-events.ts). Users only,
 * any role (fleet:read); `?types=nodes,alerts` narrows it. `ready` first, then events as the hub
 * fans them out, a keepalive comment on one shared timer, and every stream ended in preClose so
 * HQ's shutdown never waits on one (DESIGN.md §6).
 */
export function eventRoutes(app: FastifyInstance, hub: FleetEventHub, clock: Clock, metrics: Registry, o: EventRouteOptions = {}): void {
  const streams = new Set<SseStream>()
  const keepaliveMs = o.keepaliveMs ?? FLEET_EVENTS_KEEPALIVE_MS
  const maxBufferBytes = o.maxBufferBytes ?? MAX_STREAM_BUFFER_BYTES
  let keepalive: NodeJS.Timeout | undefined
  let closing = false

  new Gauge({
    name: 'jil_hq_event_streams',
    help: 'Live event streams (GET /v1/events) open on this replica',
    registers: [metrics],
    collect() {
      this.set(streams.size)
    },
  })
  const dropped = new Counter({name: 'jil_hq_event_streams_dropped_total', help: 'Event streams dropped because their client fell too far behind', registers: [metrics]})

  const forget = (s: SseStream) => {
    streams.delete(s)
    if (streams.size === 0) {
      clearInterval(keepalive)
      keepalive = undefined
    }
  }

  app.addHook('preClose', async () => {
    closing = true
    hub.endAll()
    for (const s of [...streams]) s.end()
    clearInterval(keepalive)
    keepalive = undefined
  })

  app.get<{Querystring: Static<typeof EventsQuery>}>('/v1/events', {config: {access: {permission: 'fleet:read'}}, schema: {querystring: EventsQuery}}, async (req, reply) => {
    const types = new Set<ChangeKind>(req.query.types ? (req.query.types.split(',') as ChangeKind[]) : CHANGE_KINDS)
    const stream = new SseStream(reply.raw, maxBufferBytes, () => dropped.inc())
    let unsubscribe: (() => void) | undefined
    let gone = false
    // The client may leave while the subscription is being set up: whichever comes last cleans up.
    reply.raw.once('close', () => {
      gone = true
      unsubscribe?.()
      stream.end()
      forget(stream)
    })
    unsubscribe = await hub.subscribe({
      types,
      open: () => stream.event('ready', JSON.stringify({type: 'ready', at: clock.now().toISOString()})),
      send: (event, json) => {
        stream.event(event.type, json)
        if (stream.ended) unsubscribe?.()
      },
      end: () => stream.end(),
    })
    if (gone || closing) {
      unsubscribe()
      stream.end()
    } else {
      streams.add(stream)
      keepalive ??= setInterval(() => {
        for (const s of streams) s.comment('keepalive')
      }, keepaliveMs).unref()
    }
    return reply.type('text/event-stream').header('cache-control', 'no-store').header('x-accel-buffering', 'no').send(stream.body)
  })
}
