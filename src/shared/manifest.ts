import {createPublicKey, verify as nodeVerify, type KeyObject} from 'node:crypto'

import {canonicalBytes, canonicalJson} from './canonical.js'
import {JilError} from './errors.js'
import type {Role} from './pki.js'
import {keyIdOf, parseEd25519PublicPem, type Signer} from './signing.js'
import {verifyUserSignature, type UserSignature, type VerifiedUserSignature} from './user-signature.js'

/**
 * Signed image manifests (DESIGN.md §5): the single place nodes and HQ verify them.
 *
 * A manifest says "these bits (a registry manifest digest) are release V of image I on track T",
 * signed by HQ's Ed25519 image-signing key. A promotion adds a manifest for the next track over the
 * same digest; approvals (user signatures, DESIGN.md §4) travel inside the manifest they approve.
 *
 * Verification is pure and synchronous, with node:crypto (OpenSSL) for Ed25519: this is the bulk path
 * (DESIGN.md §10). `verifyEd25519` in signing.ts (noble, async) stays for single signatures; both
 * follow RFC 8032 (not ZIP-215), so they accept the same signatures.
 */

export type Track = 'devnet' | 'testnet' | 'mainnet'
export const TRACKS: readonly Track[] = ['devnet', 'testnet', 'mainnet']

export function isTrack(s: unknown): s is Track {
  return typeof s === 'string' && (TRACKS as readonly string[]).includes(s)
}

export type ImageManifest = {
  /** Image name, e.g. `jil/settlement-api`. */
  image: string
  /** Registry host/path, e.g. `127.0.0.1:5000/jil/settlement-api`. */
  repository: string
  /** `sha256:<64 hex>`: the registry's manifest digest (RepoDigests), never Docker's local image id. */
  digest: string
  /** `v95.3`: compared numerically, component by component (compareVersions). */
  version: string
  track: Track
  commit: string
  /** ISO 8601, when HQ signed this manifest (a promotion's manifest: when it was promoted). */
  created_at: string
  /** The signing key's id: first 16 hex of sha256(raw public key). */
  key_id: string
  /** Base64 of the 64-byte Ed25519 signature over manifestSigningBytes(this). */
  signature: string
  /** User signatures over approvalPayload(this): `{purpose: 'approve', image, digest, track}`. */
  approvals: UserSignature[]
  /** Set when the manifest is withdrawn (`jil hq deprecate`): verification then fails with DEPRECATED. */
  deprecated?: {at: string; reason: string; by: string}
}

/** What `signManifest` is given: everything HQ's key vouches for except the key id it sets itself. */
export type UnsignedManifest = Omit<ImageManifest, 'key_id' | 'signature' | 'approvals' | 'deprecated'>

/**
 * Fields left out of the signed bytes:
 * - `signature`, obviously;
 * - `approvals`: added after signing (approvers sign the digest and target track, not HQ's manifest),
 *   and each is itself signed by its user and checked against HQ's CA, so it needs no cover from HQ's key;
 * - `deprecated`: a withdrawal is served alongside the manifest (HQ adds it later, without re-signing).
 *   Dropping it can only be done by whoever serves manifests to the node (HQ over mTLS); adding one
 *   only makes verification fail, so it is never a way in.
 * Every other field, including any field this version does not know, is covered: a field added to a
 * signed manifest breaks its signature.
 */
const UNSIGNED_FIELDS = ['signature', 'approvals', 'deprecated'] as const

/** RFC 8785 JSON of the manifest without `signature`, `approvals` and `deprecated`: what HQ's key signs. */
export function manifestSigningBytes(m: UnsignedManifest & {key_id: string} & Partial<Pick<ImageManifest, (typeof UNSIGNED_FIELDS)[number]>>): Uint8Array {
  return canonicalBytes(signedPart(m))
}

function signedPart(m: object): Record<string, unknown> {
  const body: Record<string, unknown> = {...(m as Record<string, unknown>)}
  for (const f of UNSIGNED_FIELDS) delete body[f]
  return body
}

/**
 * Signs a manifest with HQ's image-signing key (through a Signer: key file now, HSM later). Sets
 * key_id (signed) and signature, with no approvals yet. The fields are checked first (digest form,
 * version, track, created_at): HQ never signs what a node would refuse as malformed. What is returned
 * is the canonical form re-read, so it survives any JSON round trip unchanged.
 */
export async function signManifest(unsigned: UnsignedManifest, signer: Signer): Promise<ImageManifest> {
  const body = signedPart({...unsigned, key_id: signer.keyId})
  const problem = shapeProblem({...body, signature: 'A'.repeat(86) + '==', approvals: []})
  if (problem) throw new JilError('MANIFEST_INVALID', `cannot sign this manifest: ${problem}`, {hint: 'this is a bug in the caller', status: 400})
  const json = canonicalJson(body)
  const sig = await signer.sign(new TextEncoder().encode(json))
  return {...(JSON.parse(json) as Omit<ImageManifest, 'signature' | 'approvals'>), signature: Buffer.from(sig).toString('base64'), approvals: []}
}

// ---------------------------------------------------------------------------------------------
// Versions

const VERSION = /^v(\d{1,15})((?:\.\d{1,15}){0,7})$/

/**
 * `v95.3` → [95, 3]. A `v`, then 1 to 8 dot-separated decimal components of at most 15 digits
 * (leading zeros allowed and ignored: v95.03 equals v95.3). Anything else is VERSION_INVALID.
 */
export function parseVersion(v: string): number[] {
  const m = typeof v === 'string' ? VERSION.exec(v) : null
  if (!m) {
    throw new JilError('VERSION_INVALID', `${JSON.stringify(v)} is not a version`, {hint: 'versions look like v95.3: a v and numbers separated by dots', status: 400})
  }
  const rest = m[2] ? m[2].slice(1).split('.') : []
  return [m[1]!, ...rest].map(Number)
}

/** Numeric, component by component; a missing component counts as 0 (v95 = v95.0 < v95.0.1 < v95.10 < v96). */
export function compareVersions(a: string, b: string): -1 | 0 | 1 {
  const x = parseVersion(a)
  const y = parseVersion(b)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const p = x[i] ?? 0
    const q = y[i] ?? 0
    if (p !== q) return p < q ? -1 : 1
  }
  return 0
}

// ---------------------------------------------------------------------------------------------
// Approvals

/** Roles whose signature counts as an approval (DESIGN.md §4: ops-lead/security-lead approve; admin may). */
export const APPROVER_ROLES: readonly Role[] = ['ops-lead', 'security-lead', 'admin']

/** How many approvals each track needs (DESIGN.md §4). verifyManifest never goes below these. */
export const TRACK_POLICY: Readonly<Record<Track, {readonly minApprovals: number; readonly requireRoles?: readonly Role[]}>> = {
  devnet: {minApprovals: 0},
  testnet: {minApprovals: 1},
  mainnet: {minApprovals: 2, requireRoles: ['security-lead']},
}

export type ApprovalPayload = {purpose: 'approve'; image: string; digest: string; track: Track}

/**
 * What an approver signs: the digest (the bits), the image and the TARGET track it is approved for.
 * `track` defaults to the manifest's own track; HQ passes the target when approving an image for a
 * track it is not on yet (the approvals are then carried into the target track's manifest).
 */
export function approvalPayload(m: Pick<ImageManifest, 'image' | 'digest' | 'track'>, track: Track = m.track): ApprovalPayload {
  return {purpose: 'approve', image: m.image, digest: m.digest, track}
}

// ---------------------------------------------------------------------------------------------
// Verification

export type VerifyFailure =
  | 'BAD_SIGNATURE'
  | 'UNKNOWN_KEY'
  | 'DIGEST_MISMATCH'
  | 'TRACK_MISMATCH'
  | 'INSUFFICIENT_APPROVALS'
  | 'VERSION_ROLLBACK'
  | 'DEPRECATED'
  | 'KEY_RETIRED'

export type VerifyResult = {ok: true; approvers: string[]} | {ok: false; code: VerifyFailure; message: string}

export type TrustedKey = {
  key_id: string
  /** SPKI PEM of the Ed25519 public key. */
  public_key: string
  /**
   * When the key was taken out of service (ISO 8601). Manifests it signed before then stay valid;
   * ones claiming a later created_at are KEY_RETIRED. Retiring is for a key rotated out in good order:
   * created_at is the key's own claim, so a key that may be compromised is removed from the set
   * (then everything it signed is UNKNOWN_KEY), not retired.
   */
  retired_at?: string
}

export type ManifestTrust = {
  /** The pinned image-signing keys (learned at join, then through the rotation chain). */
  keys: readonly TrustedKey[]
  /** HQ's CA certificate, PEM: approvals chain to it. */
  caPem: string
  /** Is this certificate serial (lower-case hex, no leading zeros) revoked? */
  isRevoked: (serial: string) => boolean
  /**
   * The verifier's clock. Not used to judge approvals: an approver's certificate is judged at the
   * manifest's created_at (see verifyManifest), so that manifests do not stop verifying when the
   * approvers' 90-day certificates expire.
   */
  now?: Date
}

export type ManifestPolicy = {
  /** The digest expected, e.g. what the tag resolves to now, or what the desired state names. */
  digest?: string
  /** The track the manifest must be for. */
  track: Track
  /** Distinct approvers needed (never fewer than TRACK_POLICY[track].minApprovals). */
  minApprovals: number
  /** At least one counted approver must hold one of these roles (TRACK_POLICY's requirement applies too). */
  requireRoles?: readonly string[]
  /** The user who pushed the image: their own approval does not count. */
  pusher?: string
  /** The version running now: a lower manifest version is VERSION_ROLLBACK unless allowRollback. */
  currentVersion?: string
  allowRollback?: boolean
}

/** A registry manifest digest: sha256: and 64 lower-case hex digits. */
export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/
const ED25519_B64 = /^[A-Za-z0-9+/]{86}==$/
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/

function isoTime(s: unknown): number | undefined {
  if (typeof s !== 'string' || !ISO_TIME.test(s)) return undefined
  const t = Date.parse(s)
  return Number.isNaN(t) ? undefined : t
}

/** What is wrong with the shape of a manifest (it usually arrives as JSON), or undefined. */
function shapeProblem(m: unknown): string | undefined {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return 'not an object'
  const r = m as Record<string, unknown>
  for (const f of ['image', 'repository', 'commit', 'key_id'] as const) {
    if (typeof r[f] !== 'string' || r[f] === '') return `${f} is not a non-empty string`
  }
  if (typeof r.digest !== 'string' || !DIGEST_PATTERN.test(r.digest)) return `digest ${JSON.stringify(r.digest)} is not sha256:<64 lower-case hex>`
  if (typeof r.version !== 'string' || !VERSION.test(r.version)) return `version ${JSON.stringify(r.version)} is not a version like v95.3`
  if (!isTrack(r.track)) return `track ${JSON.stringify(r.track)} is not devnet, testnet or mainnet`
  if (isoTime(r.created_at) === undefined) return `created_at ${JSON.stringify(r.created_at)} is not an ISO 8601 time`
  if (typeof r.signature !== 'string' || !ED25519_B64.test(r.signature)) return 'signature is not base64 of 64 bytes'
  if (!Array.isArray(r.approvals)) return 'approvals is not a list'
  return undefined
}

// Verifying keys, parsed once per PEM (the bulk path verifies thousands of manifests with a few keys).
const keyCache = new Map<string, {key: KeyObject; keyId: string} | null>()

function loadKey(pem: string): {key: KeyObject; keyId: string} | null {
  let k = keyCache.get(pem)
  if (k === undefined) {
    try {
      k = {key: createPublicKey(pem), keyId: keyIdOf(parseEd25519PublicPem(pem))}
    } catch {
      k = null
    }
    if (keyCache.size >= 256) keyCache.clear()
    keyCache.set(pem, k)
  }
  return k
}

/**
 * Ed25519 verification with node:crypto (OpenSSL), synchronous: the bulk path. False for anything
 * that is not a valid signature (wrong length, not an Ed25519 SPKI key, mismatch); never throws.
 */
export function verifyEd25519Sync(signature: Uint8Array, message: Uint8Array, publicKeyPem: string): boolean {
  if (signature.length !== 64) return false
  const k = loadKey(publicKeyPem)
  if (!k) return false
  try {
    return nodeVerify(null, message, k.key, signature)
  } catch {
    return false
  }
}

const fail = (code: VerifyFailure, message: string): VerifyResult => ({ok: false, code, message})

/**
 * Verifies a manifest against the pinned keys, HQ's CA and a policy. Pure and synchronous; never
 * throws for anything in the manifest (a malformed one is BAD_SIGNATURE); throws VERSION_INVALID only
 * when policy.currentVersion is not a version (the caller's bug).
 *
 * Checks, in order, stopping at the first failure:
 *  1. UNKNOWN_KEY — key_id is not one of trust.keys (or that entry's PEM is not the key its id names);
 *  2. BAD_SIGNATURE — malformed manifest;
 *  3. KEY_RETIRED — the key was retired at or before the manifest's created_at;
 *  4. BAD_SIGNATURE — the Ed25519 signature does not hold over manifestSigningBytes;
 *  5. DIGEST_MISMATCH — policy.digest is given and differs;
 *  6. TRACK_MISMATCH — the manifest is for another track than policy.track;
 *  7. DEPRECATED — the manifest was withdrawn;
 *  8. INSUFFICIENT_APPROVALS — any approval that is not valid rejects the whole manifest (bad
 *     signature, cert not from HQ's CA or revoked, role not ops-lead/security-lead/admin, payload not
 *     exactly approvalPayload(manifest)); then fewer distinct approvers than required (one user counts
 *     once, the pusher not at all), or none holding a required role. Requirements are
 *     max(policy.minApprovals, TRACK_POLICY[track].minApprovals) and both role requirements.
 *     An approver's certificate is judged at the manifest's created_at — the time HQ, holding the
 *     signing key, accepted the approvals and signed — not at the verifier's now: otherwise every
 *     manifest would stop verifying once its approvers' certificates expired. Revocation is checked
 *     as of now (trust.isRevoked), whenever it happened. So approvals for a track the manifest is not
 *     for must not sit in its list: HQ keeps pending approvals aside and carries them into the target
 *     track's manifest at promotion;
 *  9. VERSION_ROLLBACK — policy.currentVersion is given, the manifest's version is lower and
 *     policy.allowRollback is not set.
 *
 * On success, `approvers` lists the distinct users whose approvals counted, sorted.
 */
export function verifyManifest(m: ImageManifest, trust: ManifestTrust, policy: ManifestPolicy): VerifyResult {
  const r = m as unknown as Record<string, unknown> | null
  const keyId = typeof r === 'object' && r !== null ? r.key_id : undefined
  if (typeof keyId !== 'string') return fail('UNKNOWN_KEY', 'the manifest names no signing key')
  const entry = trust.keys.find((k) => k.key_id === keyId)
  if (!entry) return fail('UNKNOWN_KEY', `the manifest is signed by key ${keyId}, which is not among the pinned keys (${trust.keys.map((k) => k.key_id).join(', ') || 'none'})`)
  const key = loadKey(entry.public_key)
  if (!key || key.keyId !== keyId) return fail('UNKNOWN_KEY', `the pinned key entry ${keyId} does not hold the Ed25519 key of that id`)

  const problem = shapeProblem(m)
  if (problem) return fail('BAD_SIGNATURE', `malformed manifest: ${problem}`)
  const createdAt = isoTime(m.created_at)!

  if (entry.retired_at !== undefined) {
    const retiredAt = isoTime(entry.retired_at)
    if (retiredAt === undefined) return fail('KEY_RETIRED', `key ${keyId} has an unreadable retirement time ${JSON.stringify(entry.retired_at)}: treated as retired`)
    if (retiredAt <= createdAt) return fail('KEY_RETIRED', `key ${keyId} was retired at ${entry.retired_at}, before this manifest's created_at ${m.created_at}`)
  }

  let bytes: Uint8Array
  try {
    bytes = manifestSigningBytes(m)
  } catch (err) {
    return fail('BAD_SIGNATURE', `malformed manifest: ${(err as Error).message}`)
  }
  if (!verifyEd25519Sync(Buffer.from(m.signature, 'base64'), bytes, entry.public_key)) {
    return fail('BAD_SIGNATURE', `the signature of ${m.image}@${m.digest} (${m.version}, ${m.track}) does not hold for key ${keyId}`)
  }

  if (policy.digest !== undefined && m.digest !== policy.digest) {
    return fail('DIGEST_MISMATCH', `the manifest is for ${m.digest}, not the expected ${policy.digest}`)
  }
  if (m.track !== policy.track) return fail('TRACK_MISMATCH', `the manifest is for ${m.track}, not ${policy.track}`)
  if (m.deprecated !== undefined && m.deprecated !== null) {
    const d = m.deprecated as Partial<NonNullable<ImageManifest['deprecated']>>
    return fail('DEPRECATED', `${m.image}@${m.digest} (${m.version}) was withdrawn${typeof d.at === 'string' ? ` at ${d.at}` : ''}${typeof d.by === 'string' ? ` by ${d.by}` : ''}${typeof d.reason === 'string' ? `: ${d.reason}` : ''}`)
  }

  // Approvals.
  const expected = canonicalJson(approvalPayload(m))
  const check = {caPem: trust.caPem, now: new Date(createdAt), purpose: 'approve', roles: APPROVER_ROLES, isRevoked: trust.isRevoked}
  const counted = new Map<string, Set<Role>>()
  let pusherApproved = false
  for (const [i, a] of m.approvals.entries()) {
    let who: VerifiedUserSignature
    try {
      who = verifyUserSignature(a, check)
    } catch (err) {
      const why = err instanceof JilError ? `${err.code}: ${err.message}` : (err as Error).message
      return fail('INSUFFICIENT_APPROVALS', `approval ${i + 1} is not valid (${why})`)
    }
    let payload: string
    try {
      payload = canonicalJson(a.payload)
    } catch {
      payload = ''
    }
    if (payload !== expected) {
      return fail('INSUFFICIENT_APPROVALS', `approval ${i + 1} by ${who.user} is for ${payload}, not ${expected}`)
    }
    if (policy.pusher !== undefined && who.user === policy.pusher) {
      pusherApproved = true
      continue
    }
    const roles = counted.get(who.user) ?? new Set<Role>()
    roles.add(who.role)
    counted.set(who.user, roles)
  }
  const floor = TRACK_POLICY[m.track]
  const need = Math.max(policy.minApprovals, floor.minApprovals)
  const approvers = [...counted.keys()].sort()
  const pusherNote = pusherApproved ? ` (${policy.pusher} pushed it: their approval does not count)` : ''
  if (approvers.length < need) {
    return fail('INSUFFICIENT_APPROVALS', `${m.track} needs ${need} distinct approver${need === 1 ? '' : 's'}, ${m.image}@${m.digest} has ${approvers.length}${approvers.length ? ` (${approvers.join(', ')})` : ''}${pusherNote}`)
  }
  for (const required of [floor.requireRoles, policy.requireRoles]) {
    if (!required || required.length === 0) continue
    const has = [...counted.values()].some((roles) => [...roles].some((role) => required.includes(role)))
    if (!has) return fail('INSUFFICIENT_APPROVALS', `${m.track} needs an approval by a ${required.join(' or ')}; ${m.image}@${m.digest} has none`)
  }

  if (policy.currentVersion !== undefined && !policy.allowRollback && compareVersions(m.version, policy.currentVersion) < 0) {
    return fail('VERSION_ROLLBACK', `${m.version} is lower than the running ${policy.currentVersion}; a rollback needs a user's signed rollback`)
  }
  return {ok: true, approvers}
}
