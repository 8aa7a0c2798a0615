/**
 * The event envelope every node puts on the sync bus (the seed's "Event Schema"): a globally unique
 * event_id (UUIDv7, so ids sort by creation time), the originating node (source_id), the topic, the
 * wall-clock time of the change, a per-source monotonic sequence (consumers find lost events by its
 * gaps), the schema version, the partition key and the payload. Topic names live here too, so HQ,
 * the node and tools spell them one way.
 */
import {randomFillSync} from 'node:crypto'

import {Type, type Static} from '@sinclair/typebox'
import {TypeCompiler} from '@sinclair/typebox/compiler'

import {canonicalJson} from './canonical.js'
import {JilError} from './errors.js'
import {NODE_ID_PATTERN} from './ids.js'

/** The envelope's schema version; a consumer refuses versions it does not know rather than guess. */
export const SYNC_SCHEMA_VERSION = 1

const UUID_V7 = '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'
/** A synced table's name: a plain lower-case SQL identifier (it becomes part of a topic name and is quoted in SQL). */
export const TABLE_NAME_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/
const TOPIC_PATTERN = '^jil\\.[a-z]+(\\.[A-Za-z0-9_]+)*$'

export const SyncEnvelopeSchema = Type.Object(
  {
    event_id: Type.String({pattern: UUID_V7}),
    source_id: Type.String({pattern: NODE_ID_PATTERN.source}),
    topic: Type.String({pattern: TOPIC_PATTERN, maxLength: 200}),
    /** Wall-clock time of the change at its source (RFC 3339, UTC). */
    ts: Type.String({pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?Z$'}),
    /** Per source, 1, 2, 3, … in the order the source published: one sequence across the state topics, its own on jil.fleet.status. */
    seq: Type.Integer({minimum: 1}),
    schema: Type.Literal(SYNC_SCHEMA_VERSION),
    /** The partition key: events with one key stay in order. */
    key: Type.String({maxLength: 4096}),
    payload: Type.Unknown(),
  },
  {additionalProperties: false},
)
export type SyncEnvelope = Static<typeof SyncEnvelopeSchema>

/** The payload of a `jil.state.sync.<table>` event: one row's new state, or its deletion. */
export const StateChangeSchema = Type.Object(
  {
    table: Type.String({pattern: TABLE_NAME_PATTERN.source}),
    op: Type.Union([Type.Literal('upsert'), Type.Literal('delete')]),
    /** The key columns' values, in the declared order. */
    key: Type.Array(Type.Union([Type.String(), Type.Number(), Type.Boolean()]), {minItems: 1, maxItems: 16}),
    /** The row's version column: concurrent changes converge on the highest (then ts, then source_id). */
    version: Type.Integer(),
    /** The whole row (column → value) for an upsert; null for a delete. */
    row: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  },
  {additionalProperties: false},
)
export type StateChange = Static<typeof StateChangeSchema>

const envelopeCheck = TypeCompiler.Compile(SyncEnvelopeSchema)
const changeCheck = TypeCompiler.Compile(StateChangeSchema)

/** Parses and checks an envelope from the bus; anything else is SYNC_EVENT_INVALID (never applied). */
export function parseEnvelope(bytes: Uint8Array | string): SyncEnvelope {
  let value: unknown
  try {
    value = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'))
  } catch {
    throw invalid('it is not JSON')
  }
  if (!envelopeCheck.Check(value)) {
    const e = envelopeCheck.Errors(value).First()
    throw invalid(`${e?.path || '/'}: ${e?.message ?? 'does not match the envelope schema'}`)
  }
  return value
}

/** The state change an envelope of a `jil.state.sync.*` topic carries. */
export function parseStateChange(env: SyncEnvelope): StateChange {
  if (!changeCheck.Check(env.payload)) {
    const e = changeCheck.Errors(env.payload).First()
    throw invalid(`payload${e?.path ?? ''}: ${e?.message ?? 'is not a state change'}`)
  }
  const c = env.payload
  if ((c.op === 'upsert') !== (c.row !== null)) throw invalid('payload: an upsert carries a row, a delete does not')
  if (env.topic !== stateSyncTopic(c.table)) throw invalid(`payload: table ${c.table} does not belong on ${env.topic}`)
  return c
}

export function encodeEnvelope(env: SyncEnvelope): Buffer {
  return Buffer.from(JSON.stringify(env))
}

function invalid(why: string): JilError {
  return new JilError('SYNC_EVENT_INVALID', `a sync event was refused: ${why}`, {hint: 'the producing node runs an incompatible jil; upgrade it', status: 400})
}

/** The partition key of a row: the canonical JSON of its key values, so every node derives the same string. */
export function rowKey(values: readonly unknown[]): string {
  return canonicalJson(values)
}

// ---------------------------------------------------------------------------------------------
// Topics (the seed's "RedPanda Topics"; DESIGN.md §3 for the zone spelling)

export const TOPICS = {
  /** Serialized ledger write requests; key = the sender account. */
  ledgerWrites: 'jil.ledger.writes',
  /** Node heartbeats, when a bus is configured. */
  fleetStatus: 'jil.fleet.status',
  /** HQ's remote-control commands. */
  fleetCommands: 'jil.fleet.commands',
  /** Platform-wide events (transactions, bridges, governance). */
  events: 'jil.events',
} as const

const STATE_SYNC_PREFIX = 'jil.state.sync.'

/** `settlements` → `jil.state.sync.settlements`. */
export function stateSyncTopic(table: string): string {
  if (!TABLE_NAME_PATTERN.test(table)) {
    throw new JilError('SYNC_TABLE_INVALID', `${JSON.stringify(table)} is not a table name that can sync`, {hint: 'table names are lower-case SQL identifiers: letters, digits, _', exit: 2})
  }
  return STATE_SYNC_PREFIX + table
}

/** The table of a `jil.state.sync.<table>` topic, or undefined for any other topic. */
export function tableOfTopic(topic: string): string | undefined {
  if (!topic.startsWith(STATE_SYNC_PREFIX)) return undefined
  const t = topic.slice(STATE_SYNC_PREFIX.length)
  return TABLE_NAME_PATTERN.test(t) ? t : undefined
}

/**
 * `CH/FINMA` (or `CH_FINMA`) → `jil.settlement.CH_FINMA`. Only the shape is checked: the 13 zones
 * are rows in HQ's zones table (data, not code), which refuses an unknown zone at admission.
 */
export function settlementTopic(zone: string): string {
  const m = /^([A-Z]{2})[/_]([A-Z]+)$/.exec(zone.trim())
  if (!m) throw new JilError('ZONE_INVALID', `${JSON.stringify(zone)} is not a zone`, {hint: 'zones look like CH/FINMA', exit: 2})
  return `jil.settlement.${m[1]}_${m[2]}`
}

// ---------------------------------------------------------------------------------------------
// UUIDv7 (RFC 9562 §5.7), from node:crypto

let lastMs = -1
let counter = 0
const rand = Buffer.alloc(10)

/**
 * A new UUIDv7: 48 bits of Unix milliseconds, then a 12-bit counter (RFC 9562 §6.2 method 1) so ids
 * made in one millisecond by this process still sort in creation order, then 62 random bits. The
 * counter starts at a random value below 2^11 each millisecond; if it runs out, the timestamp moves
 * on by one millisecond (the RFC's allowed overflow handling), so ids never go backwards here.
 */
export function uuidv7(nowMs: number = Date.now()): string {
  randomFillSync(rand)
  if (nowMs > lastMs) {
    lastMs = nowMs
    counter = ((rand[0]! << 8) | rand[1]!) & 0x7ff
  } else if (++counter > 0xfff) {
    lastMs++
    counter = ((rand[0]! << 8) | rand[1]!) & 0x7ff
  }
  const b = Buffer.alloc(16)
  b.writeUIntBE(lastMs, 0, 6)
  b[6] = 0x70 | (counter >> 8)
  b[7] = counter & 0xff
  b[8] = 0x80 | (rand[2]! & 0x3f)
  rand.copy(b, 9, 3, 10)
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}
