import {createHash} from 'node:crypto'

import {canonicalJson} from './canonical.js'
import {configDocsProblem, type ConfigDoc} from './config-docs.js'
import {JilError} from './errors.js'
import {compareVersions, DIGEST_PATTERN, verifyEd25519Sync, type TrustedKey, type Track} from './manifest.js'
import type {Role} from './pki.js'
import type {Signer} from './signing.js'
import type {ServiceSpec, StackSpec} from './stack-schema.js'
import {verifyUserSignature, type UserSignature} from './user-signature.js'

/**
 * What a node runs (DESIGN.md §5), in one place for HQ and node:
 *
 * - the **stack spec** of a track: services with image, command, env, ports, mounts, health check and
 *   whether each is critical. Versioned and signed at HQ (`jil hq stack set`);
 * - the **desired state** of one node: the spec resolved to digests, its run mode, config version and
 *   a monotonic sequence, issued/expiring, signed by HQ's image-signing key (the key nodes pin at join
 *   and follow through rotation). Every signed document carries a `kind`, so a signature over one kind
 *   is never good for another (a manifest has no `kind`).
 *
 * Verification is pure and synchronous (node:crypto Ed25519).
 */

// ---------------------------------------------------------------------------------------------
// Stack spec (its schema lives in stack-schema.ts, so a node's agents never load TypeBox)

export type {ServiceSpec, StackSpec} from './stack-schema.js'

/** A stack spec as HQ stores and serves it: versioned per track, signed. */
export type StackRecord = {
  kind: 'jil.stack/v1'
  track: Track
  version: number
  spec: StackSpec
  created_at: string
  created_by: string
  key_id: string
  signature: string
}

// ---------------------------------------------------------------------------------------------
// Desired state

export type RunMode = 'running' | 'paused' | 'stopped'
export const RUN_MODES: readonly RunMode[] = ['running', 'paused', 'stopped']

/** A user's signed consent to run a lower version than the node runs (DESIGN.md §5). */
export type RollbackPayload = {purpose: 'rollback'; track: Track; service: string; image: string; digest: string; version: string}

export function rollbackPayload(track: Track, service: string, image: string, digest: string, version: string): RollbackPayload {
  return {purpose: 'rollback', track, service, image, digest, version}
}

/** Who may sign a rollback. */
export const ROLLBACK_ROLES: readonly Role[] = ['ops-lead', 'admin']

/** One service of a node's desired state: its spec, resolved to a signed digest. */
export type DesiredService = ServiceSpec & {
  /** `registry/path`, e.g. `127.0.0.1:5000/jil/settlement-api`: containers run `repository@digest`. */
  repository: string
  digest: string
  version: string
  /** Present when this version is lower than the one before it on the track: the user's signed rollback. */
  rollback?: UserSignature
  /**
   * When HQ accepted the rollback (ISO 8601, covered by HQ's signature): the signer's certificate is
   * judged at this time, as approvals are judged at their manifest's created_at, so a rollback stays
   * valid after the signer's 90-day certificate expires. Revocation counts whenever it happened.
   */
  rollback_at?: string
}

export type DesiredState = {
  kind: 'jil.desired-state/v1'
  node_id: string
  zone: string
  track: Track
  /** Goes up whenever the content changes; a node refuses a lower one (replay). */
  sequence: number
  issued_at: string
  /** A node refuses the document after this (freeze: it keeps running what it runs). */
  expires_at: string
  run_mode: RunMode
  config_version: number
  stack_version: number
  services: DesiredService[]
  /** Services of the spec with no signed version on the track yet: not run. */
  unresolved: string[]
  /**
   * The node's effective config documents, sorted by name; `config_version` is the highest seq among
   * them. Absent from an older HQ's documents: the node then leaves its config as it is.
   */
  config?: ConfigDoc[]
  key_id: string
  signature: string
}

export type UnsignedDesiredState = Omit<DesiredState, 'key_id' | 'signature'>

/** What HQ's key signs: RFC 8785 JSON of everything but the signature. */
function signingBytes(doc: Record<string, unknown>): Uint8Array {
  const {signature: _s, ...rest} = doc
  return new TextEncoder().encode(canonicalJson(rest))
}

/** Signs a desired state or a stack record (anything with a `kind`) with HQ's image-signing key. */
export async function signDocument<T extends {kind: string}>(doc: T, signer: Signer): Promise<T & {key_id: string; signature: string}> {
  const body = {...doc, key_id: signer.keyId} as Record<string, unknown>
  delete body.signature
  const json = canonicalJson(body)
  const sig = await signer.sign(new TextEncoder().encode(json))
  return {...(JSON.parse(json) as T), key_id: signer.keyId, signature: Buffer.from(sig).toString('base64')}
}

export type DesiredStateFailure =
  | 'DS_MALFORMED'
  | 'DS_UNKNOWN_KEY'
  | 'DS_BAD_SIGNATURE'
  | 'DS_WRONG_NODE'
  | 'DS_EXPIRED'
  | 'DS_REPLAY'
  | 'DS_ROLLBACK_UNSIGNED'

/** Hints for the failures, for whoever turns a failure into a JilError. */
export const DESIRED_STATE_HINTS: Record<DesiredStateFailure, string> = {
  DS_MALFORMED: 'HQ sent a document this node cannot read; check the HQ and node versions',
  DS_UNKNOWN_KEY: "the document is signed by a key this node has not pinned; check the node's HQ (jil node status)",
  DS_BAD_SIGNATURE: 'the document was altered on the way; the node keeps running what it runs',
  DS_WRONG_NODE: "the document is for another node; check the node's identity",
  DS_EXPIRED: 'the node keeps running what it runs (freeze) until HQ serves a current document; check the clocks of node and HQ',
  DS_REPLAY: 'an older document than one already applied: refused; the node keeps running what it runs',
  DS_ROLLBACK_UNSIGNED: 'a lower version needs a user’s signed rollback (jil hq stack pin … as an ops-lead)',
}

export type DesiredStateCheck = {
  /** The node's pinned image-signing keys. */
  keys: readonly TrustedKey[]
  /** The node's identity: the document must be for this node, its track and zone. */
  nodeId: string
  track: string
  zone: string
  now: Date
  /** The highest sequence this node has applied (0 when none). */
  lastSequence: number
  /** The version each service runs now (service name → version): a lower desired version needs a rollback signature. */
  running: ReadonlyMap<string, string>
  /**
   * The version of each image (image name → version) the node last applied, kept across removals:
   * removing a service and adding it back (or under another name) at a lower version is a rollback too.
   */
  floors?: ReadonlyMap<string, string>
  /** HQ's CA (PEM): rollback signatures chain to it. */
  caPem: string
  isRevoked: (serial: string) => boolean
}

/** A service of an authentic document that the node will not run as asked (it keeps what it runs). */
export type ServiceRefusal = {service: string; code: 'DS_ROLLBACK_UNSIGNED'; message: string}

/**
 * An authentic document is applied even when some services are refused (a lower version without a
 * valid rollback): those keep what they run, and the rest (run mode included) still reaches the node.
 */
export type DesiredStateResult = {ok: true; refused: ServiceRefusal[]} | {ok: false; code: DesiredStateFailure; message: string}


/**
 * Verifies a desired state for this node, in order: shape; key pinned; signature; addressed to this
 * node, track and zone; not expired; not older than what was applied. Then, per service: a version
 * lower than the service runs, or than the image's floor, needs a valid user rollback signature for
 * exactly that service, image, digest, version and track, else the service is refused (the rest of
 * the document stands). Whether each digest has a valid signed manifest on the track is checked
 * apart (verifyManifest), before anything is pulled.
 */
export function verifyDesiredState(doc: DesiredState, check: DesiredStateCheck): DesiredStateResult {
  const fail = (code: DesiredStateFailure, message: string): DesiredStateResult => ({ok: false, code, message})
  const d = doc as unknown as Record<string, unknown> | null
  if (typeof d !== 'object' || d === null || d.kind !== 'jil.desired-state/v1') return fail('DS_MALFORMED', 'not a desired-state document')
  if (typeof d.key_id !== 'string' || typeof d.signature !== 'string') return fail('DS_MALFORMED', 'the document is not signed')
  if (!Array.isArray(d.services) || typeof d.sequence !== 'number' || typeof d.expires_at !== 'string' || typeof d.node_id !== 'string') {
    return fail('DS_MALFORMED', 'the document lacks services, sequence, node_id or expires_at')
  }
  const key = check.keys.find((k) => k.key_id === d.key_id)
  if (!key) return fail('DS_UNKNOWN_KEY', `signed by key ${String(d.key_id)}, not among the pinned keys`)
  if (!verifyEd25519Sync(Buffer.from(d.signature, 'base64'), signingBytes(d), key.public_key)) return fail('DS_BAD_SIGNATURE', 'the signature does not hold')
  if (key.retired_at && Date.parse(doc.issued_at) >= Date.parse(key.retired_at)) return fail('DS_UNKNOWN_KEY', `key ${key.key_id} was retired before this document was issued`)
  if (doc.node_id !== check.nodeId) return fail('DS_WRONG_NODE', `the document is for ${doc.node_id}, not ${check.nodeId}`)
  if (doc.track !== check.track || doc.zone !== check.zone) return fail('DS_WRONG_NODE', `the document is for ${doc.track} in ${doc.zone}; this node is on ${check.track} in ${check.zone}`)
  const expires = Date.parse(doc.expires_at)
  if (!(expires > check.now.getTime())) return fail('DS_EXPIRED', `the document expired at ${doc.expires_at}`)
  if (doc.sequence < check.lastSequence) return fail('DS_REPLAY', `sequence ${doc.sequence} is lower than ${check.lastSequence}, already applied`)
  for (const s of doc.services) {
    if (typeof s?.digest !== 'string' || !DIGEST_PATTERN.test(s.digest)) return fail('DS_MALFORMED', `service ${String(s?.name)} has no valid digest`)
    try {
      compareVersions(s.version, s.version)
    } catch {
      return fail('DS_MALFORMED', `service ${s.name} has an invalid version`)
    }
  }
  // Config documents are written to disk by name: a bad name, a duplicate or a hash that does not hold refuses the whole document.
  if (d.config !== undefined) {
    const problem = configDocsProblem(d.config)
    if (problem) return fail('DS_MALFORMED', problem)
  }
  const refused: ServiceRefusal[] = []
  for (const s of doc.services) {
    const refuse = (message: string) => refused.push({service: s.name, code: 'DS_ROLLBACK_UNSIGNED', message})
    const above = [check.running.get(s.name), check.floors?.get(s.image)].filter((v): v is string => v !== undefined && compareVersions(s.version, v) < 0)
    if (above.length === 0) continue
    const from = above.sort(compareVersions).at(-1)!
    if (!s.rollback) {
      refuse(`${s.name} would go from ${from} down to ${s.version} without a signed rollback`)
      continue
    }
    const at = s.rollback_at !== undefined && !Number.isNaN(Date.parse(s.rollback_at)) ? new Date(s.rollback_at) : check.now
    try {
      verifyUserSignature(s.rollback, {caPem: check.caPem, now: at, purpose: 'rollback', roles: ROLLBACK_ROLES, isRevoked: check.isRevoked})
    } catch (err) {
      refuse(`${s.name}: the rollback signature is not valid (${err instanceof JilError ? err.code : 'invalid'})`)
      continue
    }
    if (canonicalJson(s.rollback.payload) !== canonicalJson(rollbackPayload(doc.track, s.name, s.image, s.digest, s.version))) {
      refuse(`${s.name}: the rollback signature is for another service, digest or version`)
    }
  }
  return {ok: true, refused}
}

/** Verifies a stack record's signature (the CLI's `stack show` and any auditor). */
export function verifyStackRecord(rec: StackRecord, keys: readonly TrustedKey[]): boolean {
  const key = keys.find((k) => k.key_id === rec.key_id)
  if (!key || typeof rec.signature !== 'string') return false
  return verifyEd25519Sync(Buffer.from(rec.signature, 'base64'), signingBytes(rec as unknown as Record<string, unknown>), key.public_key)
}

/**
 * A content hash of a service as it should run: image digest and every field of its spec. Containers
 * carry it as a label, so a changed command or env is replaced like a changed digest.
 */
export function serviceSpecHash(s: DesiredService): string {
  const {rollback: _r, version: _v, ...rest} = s
  return createHash('sha256').update(canonicalJson(rest)).digest('hex').slice(0, 16)
}
