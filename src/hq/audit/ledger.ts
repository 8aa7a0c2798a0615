import {EventEmitter} from 'node:events'

import {
  auditOrigin,
  checkpointMessage,
  entryHash,
  isAuditAction,
  ZERO_HASH,
  type AuditActor,
  type AuditEntry,
  type AuditRecord,
  type Checkpoint,
} from '../../shared/audit.js'
import type {Clock} from '../../shared/clock.js'
import {Leadership} from '../../shared/db/leadership.js'
import {LOCKS, type AdvisoryLock, type Db, type Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {Pause} from '../../shared/loop.js'
import {leafHash, MerkleTree} from '../../shared/merkle.js'
import type {Signer} from '../../shared/signing.js'

/** What an HQ action records; time comes from HQ's clock. */
export type AuditInput = Omit<AuditRecord, 'time'>

type LogRow = {
  seq: number
  time: Date
  actor: AuditActor
  action: string
  subject: string
  details: Record<string, unknown>
  prev_hash: Uint8Array
  hash: Uint8Array
}

type CheckpointRow = {tree_size: number; origin: string; root_hash: Uint8Array; time: Date; key_id: string; signature: Uint8Array}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

export function toEntry(r: LogRow): AuditEntry {
  return {
    seq: r.seq,
    time: r.time.toISOString(),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    details: r.details,
    prev_hash: hex(r.prev_hash),
    hash: hex(r.hash),
  }
}

export function toCheckpoint(r: CheckpointRow): Checkpoint {
  return {
    origin: r.origin,
    tree_size: r.tree_size,
    root_hash: hex(r.root_hash),
    time: r.time.toISOString(),
    key_id: r.key_id,
    signature: Buffer.from(r.signature).toString('base64'),
  }
}

export const LOG_COLUMNS = 'seq, time, actor, action, subject, details, prev_hash, hash'

/**
 * The audit ledger of one HQ process. `append` is what every HQ action calls inside its own
 * transaction; the sequencer (one replica at a time, by advisory lock, like Trillian's signer) turns
 * committed pending rows into gapless, hash-chained log entries in batches; checkpoints sign the
 * RFC 6962 root of the log with HQ's checkpoint key.
 */
export class AuditLedger {
  private readonly events = new EventEmitter()
  /** The Merkle tree of the sequenced log, kept in memory and caught up from the database on demand. */
  private readonly tree = new MerkleTree()
  private treeSync: Promise<void> | undefined
  private running: Promise<number> | undefined
  readonly origin: string

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly checkpointSigner: Signer,
    caFingerprint: string,
    private readonly batchSize = 2000,
  ) {
    this.origin = auditOrigin(caFingerprint)
    this.events.setMaxListeners(0)
  }

  /**
   * Records an action in the caller's transaction: no action without its entry, no entry without
   * its action. Returns the pending id; `seqOf(id)` resolves once the sequencer has placed it.
   */
  async append(tx: Queryable, input: AuditInput): Promise<number> {
    return (await this.appendMany(tx, [input]))[0]!
  }

  /**
   * Records several entries of one action (a broadcast to twenty nodes, a rollout step) in one
   * statement: group commit, at the cost of one round trip for all of them.
   */
  async appendMany(tx: Queryable, inputs: readonly AuditInput[]): Promise<number[]> {
    for (const input of inputs) {
      if (!isAuditAction(input.action)) {
        throw new JilError('AUDIT_ACTION_UNKNOWN', `unknown audit action ${JSON.stringify(input.action)}`, {status: 500})
      }
    }
    if (inputs.length === 0) return []
    const time = this.clock.now().toISOString()
    const {rows} = await tx.query<{id: number}>(
      `INSERT INTO audit_pending (time, actor, action, subject, details)
       SELECT $1::timestamptz, a::jsonb, ac, su, d::jsonb FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS x(a, ac, su, d)
       RETURNING id`,
      [time, inputs.map((i) => JSON.stringify(i.actor)), inputs.map((i) => i.action), inputs.map((i) => i.subject), inputs.map((i) => JSON.stringify(i.details))],
    )
    return rows.map((r) => r.id).sort((a, b) => a - b)
  }

  /** The seq a committed pending entry received, waiting for the sequencer (of any replica). */
  async seqOf(pendingId: number, timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const {rows} = await this.db.query<{seq: number}>('SELECT seq FROM audit_log WHERE pending_id = $1', [pendingId])
      if (rows[0]) return rows[0].seq
      if (Date.now() > deadline) {
        throw new JilError('AUDIT_NOT_SEQUENCED', `audit entry ${pendingId} was not sequenced within ${timeoutMs} ms`, {status: 503, hint: 'check that an HQ replica runs the audit sequencer'})
      }
      this.kick()
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t)
          this.events.off('sequenced', done)
          resolve()
        }
        const t = setTimeout(done, 100)
        this.events.once('sequenced', done)
      })
    }
  }

  /** Asks the sequencer loop (if this replica runs it) to run now. */
  kick(): void {
    this.events.emit('kick')
  }

  onKick(fn: () => void): () => void {
    this.events.on('kick', fn)
    return () => this.events.off('kick', fn)
  }

  /**
   * Moves committed pending entries into the log, in batches, while holding `lock`. Single-flight:
   * a call while one runs joins it. Returns how many entries it sequenced.
   */
  sequence(lock: AdvisoryLock): Promise<number> {
    this.running ??= this.sequenceAll(lock).finally(() => (this.running = undefined))
    return this.running
  }

  /**
   * Where no sequencer loop runs (hq init, tools, tests): waits for the sequencer's lock, sequences
   * everything committed so far, and lets the lock go.
   */
  async sequenceNow(): Promise<number> {
    const lock = await this.db.advisoryLock(LOCKS.auditSequencer)
    try {
      return await this.sequence(lock)
    } finally {
      await lock.release()
    }
  }

  private async sequenceAll(lock: AdvisoryLock): Promise<number> {
    let total = 0
    for (;;) {
      const n = await this.sequenceBatch(lock)
      total += n
      if (n < this.batchSize) return total
    }
  }

  private async sequenceBatch(lock: AdvisoryLock): Promise<number> {
    const placed = await lock.transaction(async (tx) => {
      const head = await tx.query<{seq: number; hash: Uint8Array}>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1')
      const pending = await tx.query<{id: number; time: Date; actor: AuditActor; action: string; subject: string; details: Record<string, unknown>}>(
        'SELECT id, time, actor, action, subject, details FROM audit_pending ORDER BY id LIMIT $1',
        [this.batchSize],
      )
      if (pending.rows.length === 0) return []
      let seq = head.rows[0]?.seq ?? 0
      let prev: Uint8Array = head.rows[0] ? Buffer.from(head.rows[0].hash) : ZERO_HASH
      const cols = {seq: [] as number[], time: [] as string[], actor: [] as string[], action: [] as string[], subject: [] as string[], details: [] as string[], prev: [] as string[], hash: [] as string[], pid: [] as number[]}
      const hashes: Buffer[] = []
      for (const p of pending.rows) {
        seq += 1
        const rec = {seq, time: p.time.toISOString(), actor: p.actor, action: p.action, subject: p.subject, details: p.details}
        const h = entryHash(prev, rec)
        cols.seq.push(seq)
        cols.time.push(rec.time)
        cols.actor.push(JSON.stringify(p.actor))
        cols.action.push(p.action)
        cols.subject.push(p.subject)
        cols.details.push(JSON.stringify(p.details))
        cols.prev.push(hex(prev))
        cols.hash.push(h.toString('hex'))
        cols.pid.push(p.id)
        hashes.push(h)
        prev = h
      }
      await tx.query(
        `INSERT INTO audit_log (seq, time, actor, action, subject, details, prev_hash, hash, pending_id)
         SELECT s, t::timestamptz, a::jsonb, ac, su, d::jsonb, decode(ph, 'hex'), decode(h, 'hex'), p
           FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[])
             AS x(s, t, a, ac, su, d, ph, h, p)`,
        [cols.seq, cols.time, cols.actor, cols.action, cols.subject, cols.details, cols.prev, cols.hash, cols.pid],
      )
      await tx.query('DELETE FROM audit_pending WHERE id = ANY($1::int8[])', [cols.pid])
      return hashes.map((h, i) => ({seq: cols.seq[i]!, hash: h}))
    })
    if (placed.length > 0) {
      // Extend the in-memory tree only when it is exactly at our batch's start; otherwise it catches up from the database.
      if (this.tree.size === placed[0]!.seq - 1 && !this.treeSync) for (const p of placed) this.tree.append(leafHash(p.hash))
      this.events.emit('sequenced')
    }
    return placed.length
  }

  /** Brings the in-memory tree up to the log's current size. */
  async syncTree(): Promise<MerkleTree> {
    this.treeSync ??= (async () => {
      try {
        for (;;) {
          const from = this.tree.size
          const {rows} = await this.db.query<{seq: number; hash: Uint8Array}>('SELECT seq, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 50000', [from])
          if (rows.length === 0) return
          for (const r of rows) {
            if (r.seq !== this.tree.size + 1) {
              throw new JilError('AUDIT_LOG_GAP', `the audit log has no entry ${this.tree.size + 1}`, {status: 500, hint: 'run jil audit verify: the log may have been tampered with'})
            }
            this.tree.append(leafHash(r.hash))
          }
        }
      } finally {
        this.treeSync = undefined
      }
    })()
    await this.treeSync
    return this.tree
  }

  /** Signs a checkpoint over the whole log unless the latest one already covers it. */
  async checkpoint(): Promise<Checkpoint | undefined> {
    const tree = await this.syncTree()
    const latest = await this.latestCheckpoint()
    if (tree.size === 0) return latest
    if (latest && latest.tree_size >= tree.size) return latest
    const size = tree.size
    const body = {origin: this.origin, tree_size: size, root_hash: hex(tree.root(size)), time: this.clock.now().toISOString()}
    const signature = await this.checkpointSigner.sign(checkpointMessage(body))
    await this.db.query(
      `INSERT INTO audit_checkpoints (tree_size, origin, root_hash, time, key_id, signature)
       VALUES ($1, $2, decode($3, 'hex'), $4, $5, decode($6, 'hex'))
       ON CONFLICT (tree_size) DO NOTHING`,
      [size, body.origin, body.root_hash, body.time, this.checkpointSigner.keyId, Buffer.from(signature).toString('hex')],
    )
    return this.latestCheckpoint()
  }

  async latestCheckpoint(): Promise<Checkpoint | undefined> {
    const {rows} = await this.db.query<CheckpointRow>('SELECT * FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1')
    return rows[0] ? toCheckpoint(rows[0]) : undefined
  }

  async checkpoints(afterSize = 0, limit = 1000): Promise<Checkpoint[]> {
    const {rows} = await this.db.query<CheckpointRow>('SELECT * FROM audit_checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT $2', [afterSize, limit])
    return rows.map(toCheckpoint)
  }

  async entry(seq: number): Promise<AuditEntry | undefined> {
    const {rows} = await this.db.query<LogRow>(`SELECT ${LOG_COLUMNS} FROM audit_log WHERE seq = $1`, [seq])
    return rows[0] ? toEntry(rows[0]) : undefined
  }

  /** RFC 6962 inclusion proof of entry `seq` (leaf index seq-1) in the tree of `size` entries. */
  async inclusionProof(seq: number, size: number): Promise<string[]> {
    const tree = await this.syncTree()
    if (!Number.isInteger(size) || size < 1 || size > tree.size) {
      throw new JilError('AUDIT_SIZE_INVALID', `tree size ${size} is not between 1 and ${tree.size}`, {status: 400, hint: 'ask for a size the log has reached (see GET /v1/audit/checkpoint)'})
    }
    if (!Number.isInteger(seq) || seq < 1 || seq > size) {
      throw new JilError('AUDIT_SEQ_INVALID', `entry ${seq} is not in a tree of ${size} entries`, {status: 400, hint: 'pick a seq between 1 and the tree size'})
    }
    return tree.inclusionProof(seq - 1, size).map(hex)
  }

  async consistencyProof(from: number, to: number): Promise<string[]> {
    const tree = await this.syncTree()
    if (!Number.isInteger(to) || to < 1 || to > tree.size || !Number.isInteger(from) || from < 1 || from > to) {
      throw new JilError('AUDIT_SIZE_INVALID', `need 1 <= from <= to <= ${tree.size}, got from=${from} to=${to}`, {status: 400, hint: 'use tree sizes of signed checkpoints'})
    }
    return tree.consistencyProof(from, to).map(hex)
  }
}

/**
 * Runs the sequencer on whichever replica holds its advisory lock, and signs checkpoints on a
 * schedule. Single loop, owned by HQ's lifetime: stop() waits for the run in flight.
 */
export class AuditLoops {
  private stopped = false
  private loop: Promise<void> | undefined
  private readonly pause = new Pause()
  private readonly leadership: Leadership
  private lastCheckpointAt = 0

  constructor(
    db: Db,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
    private readonly opts: {idleMs?: number; lockRetryMs?: number; checkpointEveryMs?: number; onError?: (err: unknown) => void} = {},
  ) {
    this.leadership = new Leadership(db, LOCKS.auditSequencer)
  }

  start(): void {
    const off = this.ledger.onKick(() => this.pause.wake())
    this.loop = this.run().finally(off)
  }

  /** Whether this replica currently runs the sequencer. */
  get isSequencer(): boolean {
    return this.leadership.held
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let waitMs = this.opts.idleMs ?? 250
      try {
        const lock = await this.leadership.acquire()
        if (!lock) {
          waitMs = this.opts.lockRetryMs ?? 1000
        } else {
          await this.ledger.sequence(lock)
          const every = this.opts.checkpointEveryMs ?? 60_000
          const now = this.clock.now().getTime()
          if (now - this.lastCheckpointAt >= every) {
            this.lastCheckpointAt = now
            await this.ledger.checkpoint()
          }
        }
      } catch (err) {
        this.opts.onError?.(err)
        // The lock's session may be gone: let it go and try to take it again.
        await this.leadership.release()
        waitMs = this.opts.lockRetryMs ?? 1000
      }
      if (this.stopped) break
      await this.pause.sleep(waitMs)
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.pause.wake()
    await this.loop
    await this.leadership.release()
  }
}
