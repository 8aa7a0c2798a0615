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
    const expected = this.frontier.size + 1
    if (e.seq !== expected) {
      this.problem =
        e.seq > expected
          ? {code: 'ENTRY_MISSING', seq: expected, message: `entry ${expected} is missing (the next entry is ${e.seq})`}
          : {code: 'ENTRY_OUT_OF_ORDER', seq: e.seq, message: `entry ${e.seq} appears again after entry ${expected - 1}`}
      return
    }
    if (e.prev_hash !== Buffer.from(this.prev).toString('hex')) {
      this.problem = {code: 'CHAIN_BROKEN', seq: e.seq, message: `entry ${e.seq} does not link to entry ${e.seq - 1} (prev_hash differs)`}
      return
    }
    const h = entryHash(this.prev, e)
    if (h.toString('hex') !== e.hash) {
      this.problem = {code: 'ENTRY_HASH_MISMATCH', seq: e.seq, message: `entry ${e.seq} has been altered (its hash does not match its content)`}
      return
    }
    this.prev = h
    this.frontier.push(leafHash(h))
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

/**
 * Verifies an export stream (NDJSON: header, checkpoints, entries) line by line, from HQ or from
 * a file, with only the pinned checkpoint key. Returns the report; a malformed stream is an error.
 */
export async function verifyExportLines(lines: AsyncIterable<string>, pinned: CheckpointKey): Promise<AuditVerifyReport> {
  let verifier: LedgerVerifier | undefined
  let n = 0
  for await (const line of lines) {
    n += 1
    if (line.trim() === '') continue
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
    const {type, ...body} = rec
    if (type === 'checkpoint') verifier.addCheckpoint(body as unknown as Checkpoint)
    else if (type === 'entry') verifier.addEntry(body as unknown as AuditEntry)
    else throw exportError(n, `has unknown type ${JSON.stringify(type)}`)
    if (verifier.failed) break
  }
  if (!verifier) throw exportError(n, 'is missing: the export is empty')
  return verifier.finish()
}

function exportError(line: number, what: string): JilError {
  return new JilError('AUDIT_EXPORT_INVALID', `line ${line} of the audit export ${what}`, {hint: 'use a file written by jil audit export'})
}
