import 'reflect-metadata'

import {createPublicKey, verify as nodeVerify, webcrypto} from 'node:crypto'

import * as x509 from '@peculiar/x509'
import {beforeAll, describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa, type IssuedWithKey, type KeyPairPem} from '../../src/hq/ca/ca.js'
import {canonicalJson} from '../../src/shared/canonical.js'
import {ManualClock} from '../../src/shared/clock.js'
import {JilError} from '../../src/shared/errors.js'
import {
  approvalPayload,
  compareVersions,
  manifestSigningBytes,
  parseVersion,
  signManifest,
  TRACK_POLICY,
  verifyEd25519Sync,
  verifyManifest,
  type ImageManifest,
  type ManifestPolicy,
  type ManifestTrust,
  type Track,
  type UnsignedManifest,
} from '../../src/shared/manifest.js'
import {fileSigner, generateEd25519Key, verifyEd25519, type Ed25519KeyPem, type Signer} from '../../src/shared/signing.js'
import {signAsUser} from '../../src/shared/user-signature.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const DAY = 86_400_000
const DIGEST = 'sha256:' + '3f'.repeat(32)
const OTHER_DIGEST = 'sha256:' + 'c0'.repeat(32)
const bundle = (u: IssuedWithKey) => ({cert: u.pem, key: u.keyPem})

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof JilError) return err.code
    throw err
  }
  return undefined
}

describe('image manifests', () => {
  const clock = new ManualClock('2026-11-27T12:00:00Z')
  let pair: KeyPairPem
  let ca: CertificateAuthority
  let key: Ed25519KeyPem
  let signer: Signer
  let olga: IssuedWithKey // ops-lead
  let otto: IssuedWithKey // ops-lead
  let sam: IssuedWithKey // security-lead
  let adam: IssuedWithKey // admin
  let vic: IssuedWithKey // viewer
  let revoked: Set<string>

  const trust = (over: Partial<ManifestTrust> = {}): ManifestTrust => ({
    keys: [{key_id: key.keyId, public_key: key.publicPem}],
    caPem: pair.certPem,
    isRevoked: (s) => revoked.has(s),
    now: clock.now(),
    ...over,
  })
  const policy = (track: Track, over: Partial<ManifestPolicy> = {}): ManifestPolicy => ({track, ...TRACK_POLICY[track], ...over})

  const unsigned = (over: Partial<UnsignedManifest> = {}): UnsignedManifest => ({
    image: 'jil/settlement-api',
    repository: '127.0.0.1:5000/jil/settlement-api',
    digest: DIGEST,
    version: 'v95.3',
    track: 'devnet',
    commit: '9f2c1e0a',
    created_at: clock.now().toISOString(),
    ...over,
  })
  const sign = (over: Partial<UnsignedManifest> = {}) => signManifest(unsigned(over), signer)
  /** A manifest for `track` with approvals by these users (over the manifest's own image, digest and track). */
  const approved = async (track: Track, users: IssuedWithKey[], over: Partial<UnsignedManifest> = {}) => {
    const m = await sign({track, ...over})
    return {...m, approvals: users.map((u) => signAsUser(approvalPayload(m), bundle(u)))}
  }

  beforeAll(async () => {
    pair = await createCa(clock)
    ca = await CertificateAuthority.load(pair, clock)
    key = await generateEd25519Key()
    signer = await fileSigner(key.privatePem)
    ;[olga, otto, sam, adam, vic] = await Promise.all([
      ca.issueUser('olga', 'ops-lead'),
      ca.issueUser('otto', 'ops-lead'),
      ca.issueUser('sam', 'security-lead'),
      ca.issueUser('adam', 'admin'),
      ca.issueUser('vic', 'viewer'),
    ])
    revoked = new Set()
  })

  describe('signing', () => {
    it('signs the RFC 8785 JSON of everything but signature, approvals and deprecated', async () => {
      const m = await sign()
      expect(m).toMatchObject({...unsigned(), key_id: key.keyId, approvals: []})
      expect(Buffer.from(m.signature, 'base64')).toHaveLength(64)
      const {signature: _s, approvals: _a, ...body} = m
      expect(Buffer.from(manifestSigningBytes(m)).toString()).toBe(canonicalJson(body))
      // Independent of the unsigned fields…
      expect(manifestSigningBytes({...m, approvals: [signAsUser(approvalPayload(m), bundle(olga))], deprecated: {at: 'x', reason: 'y', by: 'z'}})).toEqual(manifestSigningBytes(m))
      // …and an ordinary Ed25519 signature: OpenSSL and noble both verify it.
      const sig = Buffer.from(m.signature, 'base64')
      expect(nodeVerify(null, manifestSigningBytes(m), createPublicKey(key.publicPem), sig)).toBe(true)
      expect(await verifyEd25519(sig, manifestSigningBytes(m), signer.publicKey)).toBe(true)
    })

    it('refuses to sign a malformed manifest', async () => {
      for (const over of [{digest: 'sha256:ABC'}, {digest: '3f'.repeat(32)}, {version: '95.3'}, {track: 'prod' as Track}, {created_at: 'yesterday'}, {image: ''}]) {
        await expect(sign(over)).rejects.toMatchObject({code: 'MANIFEST_INVALID'})
      }
    })
  })

  describe('signature and key', () => {
    it('verifies a valid devnet manifest', async () => {
      expect(verifyManifest(await sign(), trust(), policy('devnet'))).toEqual({ok: true, approvers: []})
    })

    it('refuses a tampered manifest: BAD_SIGNATURE', async () => {
      const m = await sign()
      for (const tampered of [{...m, version: 'v95.4'}, {...m, repository: 'evil.example/jil/settlement-api'}, {...m, created_at: '2026-11-27T12:00:01.000Z'}, {...m, extra: 'field'}]) {
        expect(verifyManifest(tampered, trust(), policy('devnet'))).toMatchObject({ok: false, code: 'BAD_SIGNATURE'})
      }
      const sig = Buffer.from(m.signature, 'base64')
      sig[5] = sig[5]! ^ 1
      expect(verifyManifest({...m, signature: sig.toString('base64')}, trust(), policy('devnet'))).toMatchObject({ok: false, code: 'BAD_SIGNATURE'})
    })

    it('refuses a malformed manifest as BAD_SIGNATURE and never throws on one', async () => {
      const m = await sign()
      for (const bad of [{...m, signature: 'AAAA'}, {...m, digest: 42}, {...m, approvals: null}, {...m, track: 'prod'}, {...m, created_at: 'soon'}]) {
        expect(verifyManifest(bad as unknown as ImageManifest, trust(), policy('devnet'))).toMatchObject({ok: false, code: 'BAD_SIGNATURE'})
      }
      expect(verifyManifest(null as unknown as ImageManifest, trust(), policy('devnet'))).toMatchObject({ok: false, code: 'UNKNOWN_KEY'})
    })

    it('refuses a manifest signed by a key that is not pinned: UNKNOWN_KEY', async () => {
      const other = await generateEd25519Key()
      const m = await signManifest(unsigned(), await fileSigner(other.privatePem))
      const r = verifyManifest(m, trust(), policy('devnet'))
      expect(r).toMatchObject({ok: false, code: 'UNKNOWN_KEY'})
      if (!r.ok) expect(r.message).toContain(other.keyId)
      // Claiming the pinned key's id does not help: the signature does not hold.
      expect(verifyManifest({...m, key_id: key.keyId}, trust(), policy('devnet'))).toMatchObject({ok: false, code: 'BAD_SIGNATURE'})
      // A pinned entry whose PEM is not the key its id names is not trusted either.
      expect(verifyManifest(await sign(), trust({keys: [{key_id: key.keyId, public_key: other.publicPem}]}), policy('devnet'))).toMatchObject({ok: false, code: 'UNKNOWN_KEY'})
      expect(verifyManifest(await sign(), trust({keys: []}), policy('devnet'))).toMatchObject({ok: false, code: 'UNKNOWN_KEY'})
    })

    it('keeps verifying with several keys pinned, and honours retirement: KEY_RETIRED', async () => {
      const next = await generateEd25519Key()
      const nextSigner = await fileSigner(next.privatePem)
      const oldM = await sign({created_at: '2026-11-01T00:00:00.000Z'})
      const newM = await signManifest(unsigned({created_at: '2026-11-20T00:00:00.000Z'}), nextSigner)
      const lateOld = await sign({created_at: '2026-11-20T00:00:00.000Z'})
      const keys = [
        {key_id: key.keyId, public_key: key.publicPem, retired_at: '2026-11-15T00:00:00Z'},
        {key_id: next.keyId, public_key: next.publicPem},
      ]
      expect(verifyManifest(oldM, trust({keys}), policy('devnet'))).toMatchObject({ok: true})
      expect(verifyManifest(newM, trust({keys}), policy('devnet'))).toMatchObject({ok: true})
      expect(verifyManifest(lateOld, trust({keys}), policy('devnet'))).toMatchObject({ok: false, code: 'KEY_RETIRED'})
      // Retired at exactly created_at is retired.
      expect(verifyManifest(lateOld, trust({keys: [{...keys[0]!, retired_at: '2026-11-20T00:00:00.000Z'}]}), policy('devnet'))).toMatchObject({ok: false, code: 'KEY_RETIRED'})
      // An unreadable retirement time fails closed.
      expect(verifyManifest(oldM, trust({keys: [{...keys[0]!, retired_at: 'someday'}]}), policy('devnet'))).toMatchObject({ok: false, code: 'KEY_RETIRED'})
    })
  })

  describe('policy', () => {
    it('refuses another digest than expected: DIGEST_MISMATCH (a tag moved after signing)', async () => {
      const m = await sign()
      expect(verifyManifest(m, trust(), policy('devnet', {digest: DIGEST}))).toMatchObject({ok: true})
      expect(verifyManifest(m, trust(), policy('devnet', {digest: OTHER_DIGEST}))).toMatchObject({ok: false, code: 'DIGEST_MISMATCH'})
    })

    it('refuses a manifest for another track: TRACK_MISMATCH', async () => {
      const m = await sign()
      expect(verifyManifest(m, trust(), policy('testnet'))).toMatchObject({ok: false, code: 'TRACK_MISMATCH'})
      expect(verifyManifest(m, trust(), policy('mainnet', {minApprovals: 0}))).toMatchObject({ok: false, code: 'TRACK_MISMATCH'})
    })

    it('refuses a withdrawn manifest: DEPRECATED, with the reason', async () => {
      const m = {...(await sign()), deprecated: {at: '2026-11-28T09:00:00Z', reason: 'CVE-2026-1234 in libfoo', by: 'sam'}}
      const r = verifyManifest(m, trust(), policy('devnet'))
      expect(r).toMatchObject({ok: false, code: 'DEPRECATED'})
      if (!r.ok) expect(r.message).toContain('CVE-2026-1234')
    })

    it('refuses a lower version than the running one unless rollback is allowed: VERSION_ROLLBACK', async () => {
      const m = await sign({version: 'v95.9'})
      expect(verifyManifest(m, trust(), policy('devnet', {currentVersion: 'v95.10'}))).toMatchObject({ok: false, code: 'VERSION_ROLLBACK'})
      expect(verifyManifest(m, trust(), policy('devnet', {currentVersion: 'v95.10', allowRollback: true}))).toMatchObject({ok: true})
      expect(verifyManifest(m, trust(), policy('devnet', {currentVersion: 'v95.9'}))).toMatchObject({ok: true})
      expect(verifyManifest(m, trust(), policy('devnet', {currentVersion: 'v95.8'}))).toMatchObject({ok: true})
      expect(codeOf(() => verifyManifest(m, trust(), policy('devnet', {currentVersion: 'latest'})))).toBe('VERSION_INVALID')
    })
  })

  describe('approvals', () => {
    it('testnet needs one approval', async () => {
      expect(verifyManifest(await approved('testnet', []), trust(), policy('testnet'))).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      expect(verifyManifest(await approved('testnet', [olga]), trust(), policy('testnet'))).toEqual({ok: true, approvers: ['olga']})
      expect(verifyManifest(await approved('testnet', [adam]), trust(), policy('testnet'))).toEqual({ok: true, approvers: ['adam']})
    })

    it('never goes below the track policy, whatever the caller asks', async () => {
      expect(verifyManifest(await approved('testnet', []), trust(), policy('testnet', {minApprovals: 0}))).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      expect(verifyManifest(await approved('mainnet', [olga, otto]), trust(), policy('mainnet', {minApprovals: 2, requireRoles: []}))).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      // A caller may ask for more.
      expect(verifyManifest(await approved('devnet', [olga]), trust(), policy('devnet', {minApprovals: 2}))).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      expect(verifyManifest(await approved('testnet', [olga]), trust(), policy('testnet', {requireRoles: ['security-lead']}))).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
    })

    it('mainnet: two approvals by the same user count once', async () => {
      const m = await sign({track: 'mainnet'})
      const twice = {...m, approvals: [signAsUser(approvalPayload(m), bundle(sam)), signAsUser(approvalPayload(m), bundle(sam))]}
      const r = verifyManifest(twice, trust(), policy('mainnet'))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('needs 2 distinct approvers')
      // The same user with a second cert (reissued) is still one user.
      const sam2 = await ca.issueUser('sam', 'security-lead')
      expect(verifyManifest({...m, approvals: [signAsUser(approvalPayload(m), bundle(sam)), signAsUser(approvalPayload(m), bundle(sam2))]}, trust(), policy('mainnet'))).toMatchObject({
        ok: false,
        code: 'INSUFFICIENT_APPROVALS',
      })
    })

    it('mainnet: two ops-leads without a security-lead are not enough', async () => {
      const r = verifyManifest(await approved('mainnet', [olga, otto]), trust(), policy('mainnet'))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('security-lead')
    })

    it('mainnet: an ops-lead and a security-lead are', async () => {
      expect(verifyManifest(await approved('mainnet', [sam, olga]), trust(), policy('mainnet'))).toEqual({ok: true, approvers: ['olga', 'sam']})
    })

    it("the pusher's own approval does not count", async () => {
      const r = verifyManifest(await approved('testnet', [olga]), trust(), policy('testnet', {pusher: 'olga'}))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('olga pushed it')
      expect(verifyManifest(await approved('mainnet', [olga, sam]), trust(), policy('mainnet', {pusher: 'olga'}))).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      expect(verifyManifest(await approved('mainnet', [olga, sam, otto]), trust(), policy('mainnet', {pusher: 'olga'}))).toEqual({ok: true, approvers: ['otto', 'sam']})
    })

    it('refuses the whole manifest for an approval by a viewer, or with a revoked cert', async () => {
      let r = verifyManifest(await approved('testnet', [olga, vic]), trust(), policy('testnet'))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('SIGNER_ROLE')

      const m = await approved('mainnet', [sam, olga, otto])
      expect(verifyManifest(m, trust(), policy('mainnet'))).toMatchObject({ok: true})
      r = verifyManifest(m, trust({isRevoked: (s) => s === otto.serial}), policy('mainnet'))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('SIGNER_REVOKED')
    })

    it('refuses an approval from another CA, or tampered', async () => {
      const other = await CertificateAuthority.load(await createCa(clock), clock)
      const mallory = await other.issueUser('sam', 'security-lead')
      let r = verifyManifest(await approved('mainnet', [olga, mallory]), trust(), policy('mainnet'))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('SIGNER_NOT_TRUSTED')

      const m = await approved('testnet', [olga])
      const a = m.approvals[0]!
      r = verifyManifest({...m, approvals: [{...a, payload: {...a.payload, digest: OTHER_DIGEST}}]}, trust(), policy('testnet'))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('SIGNATURE_INVALID')
    })

    it('refuses an approval made for another track, digest, image or purpose', async () => {
      const m = await sign({track: 'mainnet'})
      const sec = signAsUser(approvalPayload(m), bundle(sam))
      const others = [
        signAsUser(approvalPayload(m, 'testnet'), bundle(olga)),
        signAsUser({...approvalPayload(m), digest: OTHER_DIGEST}, bundle(olga)),
        signAsUser({...approvalPayload(m), image: 'jil/wallet-api'}, bundle(olga)),
        signAsUser({...approvalPayload(m), note: 'lgtm'}, bundle(olga)),
        signAsUser({...approvalPayload(m), purpose: 'rollback'}, bundle(olga)),
      ]
      for (const o of others) {
        expect(verifyManifest({...m, approvals: [sec, o]}, trust(), policy('mainnet'))).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      }
      expect(verifyManifest({...m, approvals: [sec, signAsUser(approvalPayload(m), bundle(olga))]}, trust(), policy('mainnet'))).toMatchObject({ok: true})
    })

    it("judges an approver's cert at the manifest's created_at, so manifests outlive the approvers' certs", async () => {
      // Short-lived certs: valid for 10 days from now.
      const [shortOps, shortSec] = await Promise.all([ca.issueUser('olga', 'ops-lead', 10), ca.issueUser('sam', 'security-lead', 10)])
      const m = await approved('mainnet', [shortOps, shortSec])
      // A year later, with the certs long expired, the manifest still verifies…
      expect(verifyManifest(m, trust({now: new Date(clock.now().getTime() + 365 * DAY)}), policy('mainnet'))).toMatchObject({ok: true})
      // …but an approval whose cert had already expired when HQ signed does not count.
      const late = await approved('mainnet', [shortOps, sam], {created_at: new Date(clock.now().getTime() + 11 * DAY).toISOString()})
      const r = verifyManifest(late, trust(), policy('mainnet'))
      expect(r).toMatchObject({ok: false, code: 'INSUFFICIENT_APPROVALS'})
      if (!r.ok) expect(r.message).toContain('SIGNER_EXPIRED')
    })

    it('checks in order: key, signature, digest, track, deprecation, approvals, version', async () => {
      const m = {...(await sign({track: 'testnet', version: 'v1.0'})), deprecated: {at: '2026-11-28T00:00:00Z', reason: 'r', by: 'sam'}}
      const p = policy('testnet', {digest: OTHER_DIGEST, currentVersion: 'v2'})
      expect(verifyManifest(m, trust(), p)).toMatchObject({code: 'DIGEST_MISMATCH'})
      expect(verifyManifest(m, trust(), {...p, digest: DIGEST})).toMatchObject({code: 'DEPRECATED'})
      expect(verifyManifest({...m, deprecated: undefined}, trust(), {...p, digest: DIGEST})).toMatchObject({code: 'INSUFFICIENT_APPROVALS'})
      expect(verifyManifest({...m, deprecated: undefined}, trust(), {...p, digest: DIGEST, track: 'mainnet'})).toMatchObject({code: 'TRACK_MISMATCH'})
      expect(verifyManifest({...m, version: 'v3'}, trust(), p)).toMatchObject({code: 'BAD_SIGNATURE'})
      expect(verifyManifest({...m, version: 'v3'}, trust({keys: []}), p)).toMatchObject({code: 'UNKNOWN_KEY'})
      const ok = await approved('testnet', [olga], {version: 'v1.0'})
      expect(verifyManifest(ok, trust(), {...p, digest: DIGEST})).toMatchObject({code: 'VERSION_ROLLBACK'})
    })
  })

  it('keeps verifying after a JSON round trip (manifest, approvals and all)', async () => {
    const m = await approved('mainnet', [sam, olga])
    const back = JSON.parse(JSON.stringify(m)) as ImageManifest
    expect(back).toEqual(m)
    expect(verifyManifest(back, trust(), policy('mainnet', {digest: DIGEST}))).toEqual({ok: true, approvers: ['olga', 'sam']})
    // Key order does not matter: canonical JSON is over sorted keys.
    const reordered = Object.fromEntries(Object.entries(back).reverse()) as ImageManifest
    expect(verifyManifest(reordered, trust(), policy('mainnet'))).toMatchObject({ok: true})
  })

  it('verifyEd25519Sync (node:crypto) agrees with noble', async () => {
    const m = await sign()
    const msg = manifestSigningBytes(m)
    const sig = Buffer.from(m.signature, 'base64')
    expect(verifyEd25519Sync(sig, msg, key.publicPem)).toBe(true)
    expect(await verifyEd25519(sig, msg, signer.publicKey)).toBe(true)
    const bad = Uint8Array.from(msg)
    bad[3] = bad[3]! ^ 1
    expect(verifyEd25519Sync(sig, bad, key.publicPem)).toBe(false)
    expect(await verifyEd25519(sig, bad, signer.publicKey)).toBe(false)
    expect(verifyEd25519Sync(sig.subarray(0, 63), msg, key.publicPem)).toBe(false)
    expect(verifyEd25519Sync(sig, msg, 'not a key')).toBe(false)
    expect(verifyEd25519Sync(sig, msg, pair.certPem)).toBe(false)
  })
})

describe('versions', () => {
  it.each([
    ['v95.3', 'v95.3', 0],
    ['v95.10', 'v95.9', 1],
    ['v95.9', 'v95.10', -1],
    ['v96', 'v95.99', 1],
    ['v95', 'v95.0', 0],
    ['v95', 'v95.0.0', 0],
    ['v95.0.1', 'v95', 1],
    ['v95.3', 'v95.3.1', -1],
    ['v1.2.3', 'v1.10', -1],
    ['v0.1', 'v0.0.9', 1],
    ['v95.03', 'v95.3', 0],
    ['v100', 'v99.999.999', 1],
    ['v999999999999999', 'v999999999999998', 1],
  ] as const)('compareVersions(%s, %s) = %i', (a, b, want) => {
    expect(compareVersions(a, b)).toBe(want)
    expect(compareVersions(b, a)).toBe(want === 0 ? 0 : -want)
  })

  it('parses versions into numbers', () => {
    expect(parseVersion('v95.3')).toEqual([95, 3])
    expect(parseVersion('v7')).toEqual([7])
    expect(parseVersion('v1.2.3.4')).toEqual([1, 2, 3, 4])
  })

  it.each(['', 'v', '95.3', 'V95.3', 'v95.', 'v.3', 'v95..3', 'v95.3-rc1', 'v95.3 ', ' v95.3', 'v-1', 'v1e3', 'latest', 'v1.2.3.4.5.6.7.8.9', 'v1234567890123456'])(
    'refuses %j as VERSION_INVALID',
    (v) => {
      expect(codeOf(() => parseVersion(v))).toBe('VERSION_INVALID')
      expect(codeOf(() => compareVersions(v, 'v1'))).toBe('VERSION_INVALID')
    },
  )

  it('refuses non-strings', () => {
    expect(codeOf(() => parseVersion(95 as unknown as string))).toBe('VERSION_INVALID')
  })
})
