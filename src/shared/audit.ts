/**
 * The audit ledger's format, shared by HQ (which writes it) and every verifier (the CLI, a regulator
 * with an export file). Fixed by DESIGN.md §7 so that it can be checked without jil's code:
 *
 *   entry hash = SHA-256(prev_hash as 32 raw bytes ‖ RFC 8785 JSON of {seq, time, actor, action, subject, details})
 *
 * the first entry's prev_hash being 32 zero bytes; the Merkle tree is RFC 6962's over leaves = the
 * entry hashes. A checkpoint is HQ's Ed25519 signature (with its own checkpoint key) over the RFC 8785
 * JSON of {origin, tree_size, root_hash, time}.
 */
import {hash as oneShotHash} from 'node:crypto'

import {canonicalBytes, canonicalJson} from './canonical.js'

/** Every action HQ records: a closed list, in one place. */
export const AUDIT_ACTIONS = [
  'hq.init',
  'user.add',
  'user.renew',
  'user.revoke',
  'operator.add',
  'operator.set',
  'token.create',
  'node.join',
  'node.renew',
  'node.upgrade',
  'node.start',
  'node.stop',
  'node.pause',
  'node.resume',
  'node.rollback',
  'node.update',
  'node.command',
  'cert.revoke',
  'image.push',
  'image.approve',
  'image.promote',
  'image.deprecate',
  'key.rotate',
  'key.retire',
  'stack.set',
  'stack.pin',
  'config.push',
  'rollout.start',
  'rollout.progress',
  'rollout.pause',
  'rollout.resume',
  'rollout.abort',
  'rollout.running',
  'rollout.paused',
  'rollout.succeeded',
  'rollout.failed',
  'rollout.reverting',
  'rollout.reverted',
  'rollout.aborted',
  'alert.ack',
  'alert.silence',
  'alert.unsilence',
  'alert.silence.expired',
  'webhook.add',
  'webhook.remove',
] as const
export type AuditAction = (typeof AUDIT_ACTIONS)[number]

export function isAuditAction(s: string): s is AuditAction {
  return (AUDIT_ACTIONS as readonly string[]).includes(s)
}

/** Who did it: a user (with the role they acted in), a node, or HQ itself. */
export type AuditActor = {type: 'user'; id: string; role: string} | {type: 'node'; id: string} | {type: 'hq'; id: string}

/** What an action records before it has a place in the log. */
export type AuditRecord = {
  time: string
  actor: AuditActor
  action: AuditAction
  subject: string
  details: Record<string, unknown>
}

/**
 * An entry of the log, as stored, served and exported. Hashes are lowercase hex. Its action is any
 * string to a verifier: a newer HQ may record actions this build does not know.
 */
export type AuditEntry = Omit<AuditRecord, 'action'> & {action: string; seq: number; prev_hash: string; hash: string}

/** The fields an entry's hash covers. */
export type HashedEntry = Pick<AuditEntry, 'seq' | 'time' | 'actor' | 'action' | 'subject' | 'details'>

export type Checkpoint = {
  origin: string
  tree_size: number
  root_hash: string
  time: string
  key_id: string
  /** Ed25519 signature over checkpointMessage(), base64. */
  signature: string
}

export const ZERO_HASH = new Uint8Array(32)

/** The bytes an entry's hash covers after prev_hash. */
export function entryBody(e: HashedEntry): Uint8Array {
  return canonicalBytes({seq: e.seq, time: e.time, actor: e.actor, action: e.action, subject: e.subject, details: e.details})
}

let scratch = Buffer.allocUnsafe(4096)

export function entryHash(prevHash: Uint8Array, e: HashedEntry): Buffer {
  // This runs once per entry when a whole ledger is verified (a million times): the canonical JSON
  // is written with its keys already in RFC 8785 order (action, actor, details, seq, subject, time),
  // into a reused buffer, and hashed in one call. A test holds it equal to entryBody().
  const body =
    '{"action":' + canonicalJson(e.action) +
    ',"actor":' + canonicalJson(e.actor) +
    ',"details":' + canonicalJson(e.details) +
    ',"seq":' + canonicalJson(e.seq) +
    ',"subject":' + canonicalJson(e.subject) +
    ',"time":' + canonicalJson(e.time) + '}'
  const len = 32 + Buffer.byteLength(body)
  if (len > scratch.length) scratch = Buffer.allocUnsafe(Math.max(len, scratch.length * 2))
  scratch.set(prevHash, 0)
  scratch.write(body, 32, 'utf8')
  return oneShotHash('sha256', scratch.subarray(0, len), 'buffer')
}

/** The bytes a checkpoint signature covers. */
export function checkpointMessage(c: Pick<Checkpoint, 'origin' | 'tree_size' | 'root_hash' | 'time'>): Uint8Array {
  return canonicalBytes({origin: c.origin, tree_size: c.tree_size, root_hash: c.root_hash, time: c.time})
}

/** The origin line of an HQ's log: which CA (installation) it belongs to. */
export function auditOrigin(caFingerprint: string): string {
  return `jil-audit/${caFingerprint}`
}

/** Sample entries of the seed's kinds: what every later issue's actions write. */
export type AuditDetails = {
  'image.push': {image: string; digest: string; version: string; track: 'devnet'; commit: string; key_id: string}
  'image.promote': {image: string; digest: string; version: string; from: string; to: string; approvals: number; approvers: string[]}
  'node.upgrade': {service: string; from_version: string; to_version: string; digest: string; strategy: 'rolling' | 'canary' | 'all-at-once'; rollout_id?: string}
  'cert.revoke': {serial: string; reason: string; kind: 'node' | 'user'}
}
