import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {JilError, messageOf, systemCode} from '../shared/errors.js'
import {fileError, writeFileAtomic} from '../shared/files.js'
import {DIGEST_PATTERN, TRACK_POLICY, verifyManifest, type ImageManifest, type TrustedKey, type Track, type VerifyFailure} from '../shared/manifest.js'
import {normalizeSerial} from '../shared/pki.js'
import {extendTrust, type ServedKey} from '../shared/signing-keys.js'
import type {AgentContext} from './agents/types.js'
import {nodePath} from './config.js'
import {loadNodeIdentity, type NodeIdentity} from './identity.js'
import {STATE_FILES} from './state.js'

/**
 * What a node trusts, kept in its state dir so it verifies offline: the image-signing keys pinned at
 * join (extended only along HQ's endorsement chain), HQ's CA, HQ's CRL (signed by that CA) and the
 * signed manifests of the digests it runs. HQ is asked for fresh copies when reachable; its answers
 * are verified here, never taken on its word.
 */
export type NodeTrust = {
  track: Track
  keys: TrustedKey[]
  caPem: string
  isRevoked: (serial: string) => boolean
}

/** Errors that mean "HQ cannot be asked now": the node then works from what it has. */
const OFFLINE = new Set(['HQ_UNREACHABLE', 'HQ_CLOSED', 'HQ_ERROR'])

function offline(err: unknown): boolean {
  return err instanceof JilError && OFFLINE.has(err.code)
}

async function readOptional(path: string, what: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return undefined
    throw fileError(path, what, err)
  }
}

/** The serials a CRL lists, after checking it is signed by HQ's CA. */
async function crlSerials(crlPem: string, caPem: string): Promise<Set<string>> {
  await import('reflect-metadata')
  const x509 = await import('@peculiar/x509')
  const {webcrypto} = await import('node:crypto')
  x509.cryptoProvider.set(webcrypto as unknown as Crypto)
  const crl = new x509.X509Crl(crlPem.replace(/X509 CRL/g, 'CRL'))
  const ca = new x509.X509Certificate(caPem)
  if (!(await crl.verify({publicKey: ca.publicKey}))) {
    throw new JilError('CRL_INVALID', "the CRL is not signed by HQ's CA", {hint: 'check the node’s HQ (jil node status); the cached CRL is kept'})
  }
  return new Set(crl.entries.map((e) => normalizeSerial(e.serialNumber)))
}

async function readPinnedKeys(stateDir: string): Promise<TrustedKey[]> {
  const text = await readOptional(nodePath(stateDir, 'signingKeys'), 'pinned signing keys')
  if (text === undefined) throw new JilError('NODE_NOT_JOINED', `no pinned signing keys in ${stateDir}`, {hint: 'join the node: jil node join'})
  return JSON.parse(text) as TrustedKey[]
}

/**
 * Loads the node's trust. With `refresh`, asks HQ for its current keys and CRL first (an unreachable
 * HQ is not an error: the pinned keys and the cached CRL serve).
 */
export async function loadTrust(ctx: AgentContext, o: {refresh: boolean}): Promise<NodeTrust> {
  const id = await ctx.identity()
  if (o.refresh) await refreshTrust(ctx, id)
  return storedTrust(id)
}

/** Extends the pinned keys along HQ's endorsements and caches HQ's CRL once it verifies; offline, keeps what is there. */
async function refreshTrust(ctx: AgentContext, id: NodeIdentity): Promise<void> {
  const keys = await readPinnedKeys(ctx.stateDir)
  const crlPath = join(ctx.stateDir, STATE_FILES.crl)
  try {
    const hq = await ctx.hq()
    const served = await hq.signingKeys()
    const extended = extendTrust(keys, served.keys as ServedKey[])
    if (JSON.stringify(extended) !== JSON.stringify(keys)) await writeFileAtomic(nodePath(ctx.stateDir, 'signingKeys'), JSON.stringify(extended, null, 2) + '\n', 0o644)
    const fresh = await hq.crlPem()
    await crlSerials(fresh, id.caPem) // verified before it replaces the cached one
    if (fresh !== (await readOptional(crlPath, 'cached CRL'))) await writeFileAtomic(crlPath, fresh, 0o644)
  } catch (err) {
    if (!offline(err)) throw err
    ctx.log.warn({err: messageOf(err)}, 'HQ unreachable: verifying with the pinned keys and the cached CRL')
  }
}

/** The node's trust as its state dir holds it (pinned keys, HQ's CA, the cached CRL), without asking HQ. */
export async function storedTrust(id: NodeIdentity): Promise<NodeTrust> {
  const keys = await readPinnedKeys(id.stateDir)
  const crlPem = await readOptional(join(id.stateDir, STATE_FILES.crl), 'cached CRL')
  const revoked = crlPem ? await crlSerials(crlPem, id.caPem) : new Set<string>()
  return {track: id.identity.track as Track, keys, caPem: id.caPem, isRevoked: (s) => revoked.has(normalizeSerial(s))}
}

type CachedManifests = {digest: string; fetched_at: string; manifests: ImageManifest[]}

function manifestCachePath(stateDir: string, digest: string): string {
  return join(stateDir, STATE_FILES.manifestsDir, `${digest.replace(':', '-')}.json`)
}

/** A digest's cached manifests; a damaged cache counts as none (HQ is asked again). */
async function readManifestCache(path: string): Promise<CachedManifests | undefined> {
  const text = await readOptional(path, 'cached manifests')
  try {
    const cached = text ? (JSON.parse(text) as CachedManifests) : undefined
    return Array.isArray(cached?.manifests) ? cached : undefined
  } catch {
    return undefined
  }
}

/**
 * The signed manifests of a digest: from HQ when `refresh` (and cached), else from the cache, else
 * from HQ. An unreachable HQ falls back to the cache; nothing cached and no HQ = no manifests.
 */
export async function manifestsFor(ctx: AgentContext, digest: string, o: {refresh: boolean}): Promise<ImageManifest[]> {
  if (!DIGEST_PATTERN.test(digest)) return []
  const path = manifestCachePath(ctx.stateDir, digest)
  const cached = await readManifestCache(path)
  if (cached && !o.refresh) return cached.manifests
  try {
    const {manifests} = await (await ctx.hq()).manifests(digest)
    const entry: CachedManifests = {digest, fetched_at: ctx.clock.now().toISOString(), manifests}
    await writeFileAtomic(path, JSON.stringify(entry) + '\n', 0o644)
    return manifests
  } catch (err) {
    if (!offline(err)) throw err
    return cached?.manifests ?? []
  }
}

export type ImageVerdict =
  | {ok: true; manifest: ImageManifest; approvers: string[]}
  | {ok: false; code: VerifyFailure | 'UNSIGNED'; message: string}

/**
 * Is this digest signed for the node's track? The manifest for the track must verify against the
 * pinned keys and the track's approval policy (DESIGN.md §4), and not be deprecated. Pure.
 */
export function verifyImage(trust: NodeTrust, manifests: readonly ImageManifest[], digest: string, o: {currentVersion?: string; allowRollback?: boolean} = {}): ImageVerdict {
  const m = manifests.find((x) => x.track === trust.track && x.digest === digest)
  if (!m) {
    const others = manifests.map((x) => x.track)
    return {ok: false, code: 'UNSIGNED', message: others.length ? `${digest} is signed for ${others.join(', ')}, not for ${trust.track}` : `${digest} has no signed manifest`}
  }
  const policy = TRACK_POLICY[trust.track]
  const r = verifyManifest(m, {keys: trust.keys, caPem: trust.caPem, isRevoked: trust.isRevoked}, {
    track: trust.track,
    digest,
    minApprovals: policy.minApprovals,
    ...(policy.requireRoles ? {requireRoles: policy.requireRoles} : {}),
    ...(o.currentVersion ? {currentVersion: o.currentVersion} : {}),
    ...(o.allowRollback ? {allowRollback: true} : {}),
  })
  return r.ok ? {ok: true, manifest: m, approvers: r.approvers} : r
}

/** Says whether HQ signed a digest for a node; what the no-container runtime asks before it pulls. */
export type SignedCheck = (digest: string) => Promise<boolean>

/**
 * The SignedCheck of a joined node, offline: the digest's manifests from the node's cache (which the
 * reconcile path fills from HQ just before it pulls) must pass verifyImage with the node's stored trust,
 * as they do for the update agent: its track, its pinned keys, its track's approvals, the cached CRL.
 */
export function signedByPinnedKeys(stateDir: string): SignedCheck {
  return async (digest) => {
    if (!DIGEST_PATTERN.test(digest)) return false
    const cached = await readManifestCache(manifestCachePath(stateDir, digest))
    if (!cached) return false
    return verifyImage(await storedTrust(await loadNodeIdentity(stateDir)), cached.manifests, digest).ok
  }
}
