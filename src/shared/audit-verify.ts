import {createPublicKey, verify as edVerify, type KeyObject} from 'node:crypto'

import {checkpointMessage, entryHash, ZERO_HASH, type AuditEntry, type Checkpoint} from './audit.js'
import {JilError} from './errors.js'
import {leafHash, MerkleFrontier, verifyConsistency, verifyInclusion} from './merkle.js'
import {keyIdOf, parseEd25519PublicPem} from './signing.js'

/** Why a ledger failed verification: the first problem found, with the seq it points at. */
export type AuditProblem = {
  code:
    | 'ENTRY_MISSING'
    | 'ENTRY_OUT_OF_ORDER'
    | 'CHAIN_BROKEN'
    | 'ENTRY_HASH_MISMATCH'
    | 'CHECKPOINT_SIGNATURE_INVALID'
    | 'CHECKPOINT_KEY_MISMATCH'
    | 'CHECKPOINT_ORIGIN_MISMATCH'
    | 'CHECKPOINT_ROOT_MISMATCH'
    | 'CHECKPOINT_BEYOND_LOG'
    | 'NO_CHECKPOINT'
  message: string
  /** The first entry known bad, when it is known exactly. */
  seq?: number
  /** Tampering somewhere in (after_seq, at_or_before_seq], when only a checkpoint shows it. */
  after_seq?: number
  at_or_before_seq?: number
}

export type AuditVerifyReport = {
  ok: boolean
  entries: number
  checkpoints: number
  tree_size: number
  root_hash: string
  latest_checkpoint: Checkpoint | null
  problem: AuditProblem | null
}

/** An entry reduced to what the chain and the tree need: its claims and what hashing it gave. */
export type HashedResult = {seq: number; prev_hash: string; hash: string; computed: string; leaf: Uint8Array}

/**
 * Hashes one entry against its own claimed prev_hash: the half of verification that needs no
 * other entry, so it can run in parallel (worker threads) ahead of the sequential half.
 */
export function hashEntry(e: AuditEntry): HashedResult {
  const prev = typeof e.prev_hash === 'string' && /^[0-9a-f]{64}$/.test(e.prev_hash) ? Buffer.from(e.prev_hash, 'hex') : ZERO_HASH
  const h = entryHash(prev, e)
  return {seq: e.seq, prev_hash: e.prev_hash, hash: e.hash, computed: h.toString('hex'), leaf: leafHash(h)}
}

/** The checkpoint key a verifier pins: from the user bundle, or a file a regulator was handed. */
export type CheckpointKey = {key: KeyObject; keyId: string}

export function checkpointKeyFromPem(pem: string): CheckpointKey {
  const raw = parseEd25519PublicPem(pem)
  return {key: createPublicKey(pem), keyId: keyIdOf(raw)}
}

/** Checks a checkpoint's signature against the pinned key (node:crypto: the bulk path, DESIGN.md §10). */
export function checkpointProblem(c: Checkpoint, pinned: CheckpointKey, origin?: string): AuditProblem | undefined {
  if (c.key_id !== pinned.keyId) {
    return {code: 'CHECKPOINT_KEY_MISMATCH', message: `checkpoint at size ${c.tree_size} is signed by key ${c.key_id}, not the pinned ${pinned.keyId}`}
  }
  if (origin !== undefined && c.origin !== origin) {
    return {code: 'CHECKPOINT_ORIGIN_MISMATCH', message: `checkpoint at size ${c.tree_size} belongs to ${c.origin}, not ${origin}`}
  }
  const sig = Buffer.from(c.signature, 'base64')
  if (sig.length !== 64 || !edVerify(null, checkpointMessage(c), pinned.key, sig)) {
    return {code: 'CHECKPOINT_SIGNATURE_INVALID', message: `checkpoint at size ${c.tree_size} has an invalid signature`}
  }
  return undefined
}

/**
 * Re-walks a ledger: every entry's chain link and hash, the RFC 6962 root at every checkpoint size,
 * every checkpoint's signature against the pinned key. Feed checkpoints first (any order), then
 * entries in seq order; `finish()` reports. Stops at the first problem, which it names.
 */
export class LedgerVerifier {
  private readonly frontier = new MerkleFrontier()
  private readonly pending: Checkpoint[] = []
  private prev: Uint8Array = ZERO_HASH
  private prevHex = '0'.repeat(64)
  private lastGoodCheckpoint = 0
  private verifiedCheckpoints = 0
  private latest: Checkpoint | null = null
  private problem: AuditProblem | null = null

  constructor(
    private readonly pinned: CheckpointKey,
    private readonly origin?: string,
  ) {}

  get failed(): boolean {
    return this.problem !== null
  }

  addCheckpoint(c: Checkpoint): void {
    if (this.problem) return
    const bad = checkpointProblem(c, this.pinned, this.origin)
    if (bad) {
      this.problem = bad
      return
    }
    this.pending.push(c)
    this.pending.sort((a, b) => a.tree_size - b.tree_size)
    if (!this.latest || c.tree_size > this.latest.tree_size) this.latest = c
  }

  addEntry(e: AuditEntry): void {
    if (this.problem) return
    const h = entryHash(this.prev, e)
    this.addHashed({seq: e.seq, prev_hash: e.prev_hash, hash: e.hash, computed: h.toString('hex'), leaf: leafHash(h)})
  }

  /**
   * The sequential half of verification, for an entry already hashed (possibly by a worker, using
   * the entry's own claimed prev_hash: if that claim is wrong the chain check below catches it).
   */
  addHashed(e: HashedResult): void {
    if (this.problem) return
    const expected = this.frontier.size + 1
    if (e.seq !== expected) {
      this.problem =
        e.seq > expected
          ? {code: 'ENTRY_MISSING', seq: expected, message: `entry ${expected} is missing (the next entry is ${e.seq})`}
          : {code: 'ENTRY_OUT_OF_ORDER', seq: e.seq, message: `entry ${e.seq} appears again after entry ${expected - 1}`}
      return
    }
    if (e.prev_hash !== this.prevHex) {
      this.problem = {code: 'CHAIN_BROKEN', seq: e.seq, message: `entry ${e.seq} does not link to entry ${e.seq - 1} (prev_hash differs)`}
      return
    }
    if (e.computed !== e.hash) {
      this.problem = {code: 'ENTRY_HASH_MISMATCH', seq: e.seq, message: `entry ${e.seq} has been altered (its hash does not match its content)`}
      return
    }
    this.prev = Buffer.from(e.computed, 'hex')
    this.prevHex = e.computed
    this.frontier.push(e.leaf)
    const next = this.pending[0]
    if (next && next.tree_size === this.frontier.size) {
      this.pending.shift()
      if (Buffer.from(this.frontier.root()).toString('hex') !== next.root_hash) {
        this.problem = {
          code: 'CHECKPOINT_ROOT_MISMATCH',
          after_seq: this.lastGoodCheckpoint,
          at_or_before_seq: next.tree_size,
          message: `the log differs from what HQ signed at size ${next.tree_size}: tampering after seq ${this.lastGoodCheckpoint} and at or before seq ${next.tree_size}`,
        }
        return
      }
      this.lastGoodCheckpoint = next.tree_size
      this.verifiedCheckpoints += 1
    }
  }

  finish(): AuditVerifyReport {
    if (!this.problem && this.pending.length > 0) {
      const c = this.pending[0]!
      this.problem = {
        code: 'CHECKPOINT_BEYOND_LOG',
        seq: this.frontier.size + 1,
        message: `HQ signed a checkpoint at size ${c.tree_size} but the log ends at ${this.frontier.size}: entries from ${this.frontier.size + 1} were removed`,
      }
    }
    if (!this.problem && this.verifiedCheckpoints === 0 && this.frontier.size > 0) {
      this.problem = {code: 'NO_CHECKPOINT', message: 'no signed checkpoint covers the log, so nothing ties it to HQ\'s key'}
    }
    return {
      ok: this.problem === null,
      entries: this.frontier.size,
      checkpoints: this.verifiedCheckpoints,
      tree_size: this.frontier.size,
      root_hash: Buffer.from(this.frontier.root()).toString('hex'),
      latest_checkpoint: this.latest,
      problem: this.problem,
    }
  }
}

/** The error a failed verification becomes at the CLI: exit 1, the first bad seq named. */
export function tamperedError(p: AuditProblem): JilError {
  return new JilError('AUDIT_TAMPERED', p.message, {
    hint: 'treat the HQ database as compromised; compare with an earlier export (jil audit export)',
    details: {problem: p.code, ...(p.seq !== undefined ? {seq: p.seq} : {}), ...(p.at_or_before_seq !== undefined ? {after_seq: p.after_seq, at_or_before_seq: p.at_or_before_seq} : {})},
  })
}

/** Verifies one entry's inclusion proof against a checkpoint the caller has already verified. */
export function verifyEntryInclusion(entry: AuditEntry, proofHex: readonly string[], checkpoint: Checkpoint): boolean {
  const recomputed = entryHash(Buffer.from(entry.prev_hash, 'hex'), entry).toString('hex')
  if (recomputed !== entry.hash) return false
  return verifyInclusion(
    leafHash(Buffer.from(entry.hash, 'hex')),
    entry.seq - 1,
    checkpoint.tree_size,
    proofHex.map((h) => Buffer.from(h, 'hex')),
    Buffer.from(checkpoint.root_hash, 'hex'),
  )
}

export function verifyCheckpointConsistency(older: Checkpoint, newer: Checkpoint, proofHex: readonly string[]): boolean {
  return verifyConsistency(older.tree_size, newer.tree_size, Buffer.from(older.root_hash, 'hex'), Buffer.from(newer.root_hash, 'hex'), proofHex.map((h) => Buffer.from(h, 'hex')))
}

export const EXPORT_FORMAT = 'jil-audit-export/1'

/** How to spread the hashing half of verification: a worker script (the built dist/workers/audit-hash.js) and how many. */
export type VerifyParallelism = {workerUrl: URL; workers: number}

const BATCH_LINES = 2000

/**
 * Verifies an export stream (NDJSON: header, checkpoints, entries) line by line, from HQ or from
 * a file, with only the pinned checkpoint key. Returns the report; a malformed stream is an error.
 * With `parallel`, entries are parsed and hashed by worker threads in batches and checked in order here.
 */
export async function verifyExportLines(lines: AsyncIterable<string>, pinned: CheckpointKey, parallel?: VerifyParallelism): Promise<AuditVerifyReport> {
  let verifier: LedgerVerifier | undefined
  let n = 0
  let inEntries = false
  const pool = parallel && parallel.workers > 0 ? await HashPool.start(parallel) : undefined
  try {
    let batch: string[] = []
    let batchStart = 0
    for await (const line of lines) {
      n += 1
      if (line.trim() === '') continue
      if (verifier && pool && line.startsWith('{"type":"entry"')) {
        inEntries = true
        if (batch.length === 0) batchStart = n
        batch.push(line)
        if (batch.length >= BATCH_LINES) {
          await pool.submit(batchStart, batch, verifier)
          batch = []
          if (verifier.failed) break
        }
        continue
      }
      let rec: {type?: string; format?: string; origin?: string} & Record<string, unknown>
      try {
        rec = JSON.parse(line) as typeof rec
      } catch {
        throw exportError(n, 'is not JSON')
      }
      if (!verifier) {
        if (rec.type !== 'header' || rec.format !== EXPORT_FORMAT || typeof rec.origin !== 'string') throw exportError(n, `is not a ${EXPORT_FORMAT} header`)
        verifier = new LedgerVerifier(pinned, rec.origin)
        continue
      }
      if (rec.type === 'entry') {
        inEntries = true
        verifier.addEntry(rec as unknown as AuditEntry) // the extra "type" field is not part of the hash
      } else if (rec.type === 'checkpoint') {
        if (inEntries) throw exportError(n, 'is a checkpoint after the entries (checkpoints come first)')
        const {type: _type, ...checkpoint} = rec
        verifier.addCheckpoint(checkpoint as unknown as Checkpoint)
      } else {
        throw exportError(n, `has unknown type ${JSON.stringify(rec.type)}`)
      }
      if (verifier.failed) break
    }
    if (pool && verifier && batch.length > 0 && !verifier.failed) await pool.submit(batchStart, batch, verifier)
    if (pool && verifier) await pool.drain(verifier)
  } finally {
    await pool?.close()
  }
  if (!verifier) throw exportError(n, 'is missing: the export is empty')
  return verifier.finish()
}

type BatchResult = {id: number; seqs: Float64Array; prev: string[]; hash: string[]; computed: string[]; leaves: Uint8Array; error?: {line: number; message: string}}

/** Worker threads hashing batches; results are applied to the verifier strictly in order. */
class HashPool {
  private nextId = 0
  private applied = 0
  private readonly inFlight = new Map<number, Promise<BatchResult>>()
  private readonly waiters = new Map<number, {resolve: (r: BatchResult) => void; reject: (err: unknown) => void}>()

  private constructor(private readonly workers: import('node:worker_threads').Worker[]) {
    for (const w of workers) {
      w.on('message', (r: BatchResult) => {
        this.waiters.get(r.id)?.resolve(r)
        this.waiters.delete(r.id)
      })
      w.on('error', (err) => {
        for (const waiter of this.waiters.values()) waiter.reject(err)
        this.waiters.clear()
      })
    }
  }

  static async start(p: VerifyParallelism): Promise<HashPool> {
    const {Worker} = await import('node:worker_threads')
    return new HashPool(Array.from({length: p.workers}, () => new Worker(p.workerUrl)))
  }

  async submit(firstLine: number, lines: string[], verifier: LedgerVerifier): Promise<void> {
    const id = this.nextId++
    const worker = this.workers[id % this.workers.length]!
    const done = new Promise<BatchResult>((resolve, reject) => this.waiters.set(id, {resolve, reject}))
    done.catch(() => {}) // observed when applied, in order
    this.inFlight.set(id, done)
    worker.postMessage({id, firstLine, lines})
    // Keep two batches per worker ahead; apply the oldest when the window is full.
    while (this.inFlight.size >= 2 * this.workers.length) await this.applyNext(verifier)
  }

  async drain(verifier: LedgerVerifier): Promise<void> {
    while (this.inFlight.size > 0) await this.applyNext(verifier)
  }

  private async applyNext(verifier: LedgerVerifier): Promise<void> {
    const id = this.applied++
    const r = await this.inFlight.get(id)!
    this.inFlight.delete(id)
    if (verifier.failed) return
    for (let i = 0; i < r.computed.length; i++) {
      verifier.addHashed({seq: r.seqs[i]!, prev_hash: r.prev[i]!, hash: r.hash[i]!, computed: r.computed[i]!, leaf: r.leaves.subarray(32 * i, 32 * i + 32)})
      if (verifier.failed) return
    }
    if (r.error) throw exportError(r.error.line, r.error.message)
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()))
  }
}

function exportError(line: number, what: string): JilError {
  return new JilError('AUDIT_EXPORT_INVALID', `line ${line} of the audit export ${what}`, {hint: 'use a file written by jil audit export'})
}
