import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {AuditLedger, AuditLoops} from '../../src/hq/audit/ledger.js'
import {HQ_MIGRATIONS} from '../../src/hq/store/migrations/index.js'
import type {AuditEntry} from '../../src/shared/audit.js'
import {LedgerVerifier} from '../../src/shared/audit-verify.js'
import {ManualClock} from '../../src/shared/clock.js'
import {migrate} from '../../src/shared/db/migrate.js'
import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {fileSigner} from '../../src/shared/signing.js'
import {ORIGIN, testCheckpointKey} from '../helpers/audit.js'
import {freshPgDatabase} from '../helpers/pg.js'
import {dbAdapters, type OpenedDb} from '../helpers/adapters.js'

const CA = 'sha256:' + '0'.repeat(64)
const key = testCheckpointKey()
const alice = {type: 'user' as const, id: 'alice', role: 'ops-lead'}

const adapters = dbAdapters()
type Opened = OpenedDb

async function readLog(db: Db): Promise<AuditEntry[]> {
  const {rows} = await db.query<{seq: number; time: Date; actor: AuditEntry['actor']; action: string; subject: string; details: Record<string, unknown>; prev_hash: Uint8Array; hash: Uint8Array}>(
    'SELECT seq, time, actor, action, subject, details, prev_hash, hash FROM audit_log ORDER BY seq',
  )
  return rows.map((r) => ({...r, time: r.time.toISOString(), prev_hash: Buffer.from(r.prev_hash).toString('hex'), hash: Buffer.from(r.hash).toString('hex')}))
}

async function verifyDb(db: Db) {
  const v = new LedgerVerifier(key.pinned, ORIGIN)
  const {rows} = await db.query<{tree_size: number; origin: string; root_hash: Uint8Array; time: Date; key_id: string; signature: Uint8Array}>('SELECT * FROM audit_checkpoints ORDER BY tree_size')
  for (const c of rows) v.addCheckpoint({...c, root_hash: Buffer.from(c.root_hash).toString('hex'), time: c.time.toISOString(), signature: Buffer.from(c.signature).toString('base64')})
  for (const e of await readLog(db)) v.addEntry(e)
  return v.finish()
}

describe.each(adapters)('the audit ledger on $name', (adapter) => {
  let o: Opened
  let ledger: AuditLedger
  const clock = new ManualClock('2026-11-27T12:00:00Z')

  beforeAll(async () => {
    o = await adapter.open()
    ledger = new AuditLedger(o.db, clock, await fileSigner(key.privatePem), CA, 64)
  })
  afterAll(async () => o?.cleanup())

  it('turns committed actions into gapless, chained entries, and tells an action its seq', async () => {
    const ids: number[] = []
    for (let i = 0; i < 10; i++) {
      clock.advance(1000)
      ids.push(await o.db.transaction((tx) => ledger.append(tx, {actor: alice, action: 'node.upgrade', subject: `CH-ZUG-0${i}`, details: {from_version: 'v95.2', to_version: 'v95.3', strategy: 'rolling', i}})))
    }
    expect(await ledger.sequenceNow()).toBe(10)
    expect(await ledger.seqOf(ids[3]!)).toBe(4)
    const log = await readLog(o.db)
    expect(log.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(log[0]).toMatchObject({actor: alice, action: 'node.upgrade', subject: 'CH-ZUG-00', time: '2026-11-27T12:00:01.000Z', prev_hash: '0'.repeat(64)})
    expect((await o.db.query('SELECT 1 FROM audit_pending')).rowCount).toBe(0)
  })

  it('leaves no entry for an action whose transaction fails, and refuses unknown actions', async () => {
    await expect(
      o.db.transaction(async (tx) => {
        await ledger.append(tx, {actor: alice, action: 'node.stop', subject: 'SG-MAS-01', details: {}})
        throw new Error('the action failed')
      }),
    ).rejects.toThrow('the action failed')
    await expect(o.db.transaction((tx) => ledger.append(tx, {actor: alice, action: 'node.explode' as never, subject: 'x', details: {}}))).rejects.toMatchObject({code: 'AUDIT_ACTION_UNKNOWN'})
    expect(await ledger.sequenceNow()).toBe(0)
    expect((await readLog(o.db)).length).toBe(10)
  })

  it('signs checkpoints over the log, and serves proofs that verify', async () => {
    const c1 = await ledger.checkpoint()
    expect(c1).toMatchObject({tree_size: 10, origin: ORIGIN, key_id: key.keyId})
    expect(await ledger.checkpoint()).toEqual(c1) // nothing new: no new checkpoint
    for (let i = 0; i < 200; i++) await o.db.transaction((tx) => ledger.append(tx, {actor: {type: 'node', id: 'CH-ZUG-01'}, action: 'node.command', subject: 'CH-ZUG-01', details: {i}}))
    expect(await ledger.sequenceNow()).toBe(200)
    const c2 = await ledger.checkpoint()
    expect(c2!.tree_size).toBe(210)
    expect(await verifyDb(o.db)).toMatchObject({ok: true, entries: 210, checkpoints: 2, root_hash: c2!.root_hash})
    const {verifyEntryInclusion, verifyCheckpointConsistency} = await import('../../src/shared/audit-verify.js')
    for (const seq of [1, 7, 10]) expect(verifyEntryInclusion((await ledger.entry(seq))!, await ledger.inclusionProof(seq, 10), c1!)).toBe(true)
    for (const seq of [1, 11, 128, 129, 210]) expect(verifyEntryInclusion((await ledger.entry(seq))!, await ledger.inclusionProof(seq, 210), c2!)).toBe(true)
    expect(verifyCheckpointConsistency(c1!, c2!, await ledger.consistencyProof(10, 210))).toBe(true)
    await expect(ledger.inclusionProof(211, 210)).rejects.toMatchObject({code: 'AUDIT_SEQ_INVALID'})
    await expect(ledger.inclusionProof(1, 999)).rejects.toMatchObject({code: 'AUDIT_SIZE_INVALID'})
  })

  it('is append-only in the database itself: UPDATE, DELETE and TRUNCATE are refused', async () => {
    await expect(o.db.query("UPDATE audit_log SET subject = 'x' WHERE seq = 1")).rejects.toThrow(/append-only/)
    await expect(o.db.query('DELETE FROM audit_log WHERE seq = 1')).rejects.toThrow(/append-only/)
    await expect(o.db.query('TRUNCATE audit_log')).rejects.toThrow(/append-only/)
    await expect(o.db.query('DELETE FROM audit_checkpoints')).rejects.toThrow(/append-only/)
    await expect(o.db.query('UPDATE audit_checkpoints SET key_id = $1', ['x'])).rejects.toThrow(/append-only/)
    await expect(o.db.query('TRUNCATE audit_checkpoints')).rejects.toThrow(/append-only/)
    expect(await verifyDb(o.db)).toMatchObject({ok: true, entries: 210})
  })

  it('is caught by verification when someone with the power to disable the triggers edits or deletes rows', async () => {
    await o.db.exec('ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only')
    await o.db.query(`UPDATE audit_log SET details = '{"i": 999}' WHERE seq = 57`)
    expect((await verifyDb(o.db)).problem).toMatchObject({code: 'ENTRY_HASH_MISMATCH', seq: 57})
    await o.db.query('DELETE FROM audit_log WHERE seq = 31')
    expect((await verifyDb(o.db)).problem).toMatchObject({code: 'ENTRY_MISSING', seq: 31})
    await o.db.exec('ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only')
  })

  it.runIf(adapter.name === 'pg')('keeps seq gapless and the chain valid with two HQ processes appending and sequencing at once', async () => {
    const d = await freshPgDatabase()
    const a = await openPg(d.url)
    await migrate(a, HQ_MIGRATIONS)
    const b = await openPg(d.url)
    try {
      const la = new AuditLedger(a, clock, await fileSigner(key.privatePem), CA, 100)
      const lb = new AuditLedger(b, clock, await fileSigner(key.privatePem), CA, 100)
      const loops = [new AuditLoops(a, la, clock, {idleMs: 5, lockRetryMs: 20}), new AuditLoops(b, lb, clock, {idleMs: 5, lockRetryMs: 20})]
      loops.forEach((l) => l.start())
      const appendMany = async (db: Db, l: AuditLedger, who: string) => {
        const ids: number[] = []
        for (let i = 0; i < 50; i++) {
          ids.push(await db.transaction(async (tx) => {
            const id = await l.append(tx, {actor: {type: 'user', id: who, role: 'ops-lead'}, action: 'node.start', subject: `${who}-${i}`, details: {i}})
            if (i % 10 === 9) await l.append(tx, {actor: {type: 'user', id: who, role: 'ops-lead'}, action: 'node.pause', subject: `${who}-${i}`, details: {i}})
            return id
          }))
        }
        return ids
      }
      const [ia, ib] = await Promise.all([appendMany(a, la, 'alice'), appendMany(b, lb, 'bob'), appendMany(a, la, 'carol'), appendMany(b, lb, 'dave')])
      const seqs = await Promise.all([...ia!, ...ib!].map((id) => la.seqOf(id)))
      expect(new Set(seqs).size).toBe(100)
      expect(loops.filter((l) => l.isSequencer).length).toBe(1)
      await Promise.all(loops.map((l) => l.stop()))
      await la.checkpoint()
      const log = await readLog(a)
      expect(log.length).toBe(220)
      expect(log.map((e) => e.seq)).toEqual(Array.from({length: 220}, (_, i) => i + 1))
      const report = await verifyDb(a)
      expect(report).toMatchObject({ok: true, entries: 220, tree_size: 220})
      expect(report.checkpoints).toBeGreaterThanOrEqual(1)
    } finally {
      await a.close()
      await b.close()
      await d.drop()
    }
  })
})
