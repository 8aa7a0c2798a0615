import {createRequire} from 'node:module'

import {describe, expect, it} from 'vitest'

import {encodeEnvelope, parseEnvelope, parseStateChange, settlementTopic, stateSyncTopic, tableOfTopic, TOPICS, uuidv7, type SyncEnvelope} from '../../src/shared/sync-envelope.js'
import {compareTs} from '../../src/sync/applier.js'
import {syncSettingsFrom} from '../../src/sync/config.js'
import {DEFAULT_SYNC_TABLES, parseSyncTables} from '../../src/sync/tables.js'
import {partitionFor} from '../../src/sync/transport.js'

const require = createRequire(import.meta.url)

function envelope(o: Partial<SyncEnvelope> = {}): SyncEnvelope {
  return {
    event_id: uuidv7(),
    source_id: 'CH-ZUG-01',
    topic: 'jil.state.sync.settlements',
    ts: '2026-03-01T12:00:00.123456Z',
    seq: 1,
    schema: 1,
    key: '["s-1"]',
    payload: {table: 'settlements', op: 'upsert', key: ['s-1'], version: 1, row: {id: 's-1'}},
    ...o,
  }
}

describe('sync envelope', () => {
  it('makes RFC 9562 UUIDv7s that carry the time and sort in creation order, even within one millisecond', () => {
    const at = Date.parse('2026-03-01T12:00:00Z')
    const ids = [...Array(5000).keys()].map(() => uuidv7(at))
    expect(ids.every((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id))).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
    expect([...ids].sort()).toEqual(ids)
    expect(parseInt(ids[0]!.replace(/-/g, '').slice(0, 12), 16)).toBe(at)
    // A clock that steps back does not make ids go back.
    const later = uuidv7(at - 10_000)
    expect(later > ids.at(-1)!).toBe(true)
  })

  it('round-trips a valid envelope and refuses malformed ones with SYNC_EVENT_INVALID', () => {
    const e = envelope()
    expect(parseEnvelope(encodeEnvelope(e))).toEqual(e)
    expect(parseStateChange(e)).toEqual(e.payload)
    for (const bad of [
      'not json',
      JSON.stringify({...e, event_id: '0190c0de-0000-4000-8000-000000000000'}),
      JSON.stringify({...e, source_id: 'ch-zug-01'}),
      JSON.stringify({...e, seq: 0}),
      JSON.stringify({...e, schema: 2}),
      JSON.stringify({...e, ts: '2026-03-01 12:00'}),
      JSON.stringify({...e, extra: true}),
    ]) {
      expect(() => parseEnvelope(bad), bad).toThrow(expect.objectContaining({code: 'SYNC_EVENT_INVALID'}))
    }
    expect(() => parseStateChange(envelope({payload: {table: 'settlements', op: 'delete', key: ['s-1'], version: 2, row: {id: 's-1'}}}))).toThrow(/a delete does not/)
    expect(() => parseStateChange(envelope({payload: {table: 'wallet_accounts', op: 'delete', key: ['s-1'], version: 2, row: null}}))).toThrow(/does not belong/)
  })

  it('names topics as the seed does', () => {
    expect(stateSyncTopic('wallet_accounts')).toBe('jil.state.sync.wallet_accounts')
    expect(tableOfTopic('jil.state.sync.wallet_accounts')).toBe('wallet_accounts')
    expect(tableOfTopic('jil.events')).toBeUndefined()
    expect(settlementTopic('CH/FINMA')).toBe('jil.settlement.CH_FINMA')
    expect(settlementTopic('US_FINCEN')).toBe('jil.settlement.US_FINCEN')
    expect(TOPICS).toEqual({ledgerWrites: 'jil.ledger.writes', fleetStatus: 'jil.fleet.status', fleetCommands: 'jil.fleet.commands', events: 'jil.events'})
    expect(() => settlementTopic('finma')).toThrow(expect.objectContaining({code: 'ZONE_INVALID'}))
    expect(() => stateSyncTopic('Robert"; DROP TABLE x')).toThrow(expect.objectContaining({code: 'SYNC_TABLE_INVALID'}))
  })

  it('orders timestamps to the microsecond, as PostgreSQL does once they are stored', () => {
    expect(compareTs('2026-03-01T12:00:00.000002Z', '2026-03-01T12:00:00.000001Z')).toBeGreaterThan(0)
    expect(compareTs('2026-03-01T12:00:00.5Z', '2026-03-01T12:00:00.500000Z')).toBe(0)
    expect(compareTs('2026-03-01T12:00:01Z', '2026-03-01T12:00:00.999999Z')).toBeGreaterThan(0)
    expect(compareTs('2026-03-01T12:00:00.9Z', '2026-03-01T12:00:01Z')).toBeLessThan(0)
    // Beyond microseconds PostgreSQL rounds (rint): .0000014 and .0000011 are one microsecond, .0000016 two.
    expect(compareTs('2026-03-01T12:00:00.0000014Z', '2026-03-01T12:00:00.0000011Z')).toBe(0)
    expect(compareTs('2026-03-01T12:00:00.0000016Z', '2026-03-01T12:00:00.000001Z')).toBeGreaterThan(0)
    expect(compareTs('2026-03-01T12:00:00.9999996Z', '2026-03-01T12:00:01Z')).toBe(0)
    // Half-way goes to the even microsecond.
    expect(compareTs('2026-03-01T12:00:00.0000025Z', '2026-03-01T12:00:00.000002Z')).toBe(0)
    expect(compareTs('2026-03-01T12:00:00.0000035Z', '2026-03-01T12:00:00.000004Z')).toBe(0)
    // Years past 2255 (beyond 2^53 microseconds) still compare exactly.
    expect(compareTs('9999-12-31T23:59:59.999999Z', '9999-12-31T23:59:59.999998Z')).toBeGreaterThan(0)
    expect(compareTs('9999-12-31T23:59:59.9999991Z', '9999-12-31T23:59:59.999998Z')).toBeGreaterThan(0)
  })
})

describe('sync configuration', () => {
  it('declares the tables the seed names by default, and parses JIL_SYNC_TABLES', () => {
    expect(DEFAULT_SYNC_TABLES.map((t) => t.name)).toEqual(['settlements', 'wallet_accounts', 'compliance_decisions'])
    expect(parseSyncTables('settlements:id:version, ledger:account+seq:rev,wallets')).toEqual([
      {name: 'settlements', key: ['id'], version: 'version'},
      {name: 'ledger', key: ['account', 'seq'], version: 'rev'},
      {name: 'wallets', key: ['id'], version: 'version'},
    ])
    for (const bad of ['', 'Bad', 'a:id:id', 'a,a', 'a:b:c:d']) expect(() => parseSyncTables(bad), bad).toThrow(expect.objectContaining({code: 'SYNC_TABLES_INVALID'}))
  })

  it('is off unless a transport is named, and says what is missing', () => {
    expect(syncSettingsFrom({})).toBeUndefined()
    expect(syncSettingsFrom({JIL_SYNC_TRANSPORT: 'off'})).toBeUndefined()
    expect(() => syncSettingsFrom({JIL_SYNC_TRANSPORT: 'kafka'})).toThrow(expect.objectContaining({code: 'SETTING_MISSING'}))
    expect(() => syncSettingsFrom({JIL_SYNC_TRANSPORT: 'postgres-log', JIL_NODE_DATABASE_URL: 'postgres://x/n'})).toThrow(/JIL_SYNC_LOG_URL/)
    expect(() => syncSettingsFrom({JIL_SYNC_TRANSPORT: 'nats'})).toThrow(expect.objectContaining({code: 'SETTING_INVALID'}))
    expect(syncSettingsFrom({JIL_SYNC_TRANSPORT: 'kafka', JIL_NODE_DATABASE_URL: 'postgres://x/n', REDPANDA_SEEDS: 'a:9093, b:9093'})).toMatchObject({transport: 'kafka', seeds: ['a:9093', 'b:9093'], partitions: 6, batch: 5000})
  })
})

describe('partitioning', () => {
  it('places a key where kafkajs\'s default (Java-compatible murmur2) partitioner does', () => {
    const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2.js') as (key: Buffer | string) => number
    for (const key of ['', 'a', 'ab', 'abc', 'abcd', '["acct-42"]', '["s-1",7]', 'Zürich', 'x'.repeat(1000)]) {
      for (const n of [1, 3, 6, 13]) expect(partitionFor(key, n), `${key} / ${n}`).toBe((murmur2(Buffer.from(key)) & 0x7fffffff) % n)
    }
  })
})
