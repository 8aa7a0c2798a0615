import {beforeAll, describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa, type IssuedWithKey, type KeyPairPem} from '../../src/hq/ca/ca.js'
import {ManualClock} from '../../src/shared/clock.js'
import {ed25519PublicPem, fileSigner, generateEd25519Key, type Signer} from '../../src/shared/signing.js'
import {
  rollbackPayload,
  serviceSpecHash,
  signDocument,
  verifyDesiredState,
  verifyStackRecord,
  type DesiredService,
  type DesiredState,
  type DesiredStateCheck,
  type StackRecord,
} from '../../src/shared/stack.js'
import type {TrustedKey} from '../../src/shared/manifest.js'
import {signAsUser} from '../../src/shared/user-signature.js'

const D1 = 'sha256:' + '1'.repeat(64)
const D2 = 'sha256:' + '2'.repeat(64)

const api = (o: Partial<DesiredService> = {}): DesiredService => ({
  name: 'api',
  image: 'jil/api',
  critical: true,
  network: 'none',
  repository: '127.0.0.1:5000/jil/api',
  digest: D2,
  version: 'v95.3',
  ...o,
})

describe('signed desired state', () => {
  const clock = new ManualClock('2026-11-27T12:00:00Z')
  let signer: Signer
  let other: Signer
  let keys: TrustedKey[]
  let pair: KeyPairPem
  let ops: IssuedWithKey
  let viewer: IssuedWithKey

  const doc = (o: Partial<DesiredState> = {}): Omit<DesiredState, 'key_id' | 'signature'> => ({
    kind: 'jil.desired-state/v1',
    node_id: 'CH-ZUG-01',
    zone: 'CH/FINMA',
    track: 'mainnet',
    sequence: 7,
    issued_at: clock.now().toISOString(),
    expires_at: new Date(clock.now().getTime() + 3_600_000).toISOString(),
    run_mode: 'running',
    config_version: 0,
    stack_version: 3,
    services: [api()],
    unresolved: [],
    ...o,
  })
  const check = (o: Partial<DesiredStateCheck> = {}): DesiredStateCheck => ({
    keys,
    nodeId: 'CH-ZUG-01',
    track: 'mainnet',
    zone: 'CH/FINMA',
    now: clock.now(),
    lastSequence: 6,
    running: new Map([['api', 'v95.2']]),
    caPem: pair.certPem,
    isRevoked: () => false,
    ...o,
  })

  beforeAll(async () => {
    const k = await generateEd25519Key()
    signer = await fileSigner(k.privatePem)
    other = await fileSigner((await generateEd25519Key()).privatePem)
    keys = [{key_id: signer.keyId, public_key: ed25519PublicPem(signer.publicKey)}]
    pair = await createCa(clock)
    const ca = await CertificateAuthority.load(pair, clock)
    ops = await ca.issueUser('olga', 'ops-lead')
    viewer = await ca.issueUser('vic', 'viewer')
  })

  it('accepts a document signed by a pinned key, for this node, current and newer', async () => {
    const signed = await signDocument(doc(), signer)
    expect(verifyDesiredState(signed, check())).toEqual({ok: true, refused: []})
    // Survives a JSON round trip (it travels as JSON and is stored as JSON).
    expect(verifyDesiredState(JSON.parse(JSON.stringify(signed)) as DesiredState, check())).toEqual({ok: true, refused: []})
    // The same sequence again is a re-issue (fresh expiry), not a replay.
    expect(verifyDesiredState(signed, check({lastSequence: 7}))).toEqual({ok: true, refused: []})
  })

  it('refuses an altered document, an unknown key, another node, an expired one and a replay', async () => {
    const signed = await signDocument(doc(), signer)
    const code = (d: DesiredState, c = check()) => {
      const r = verifyDesiredState(d, c)
      return r.ok ? 'ok' : r.code
    }
    expect(code({...signed, run_mode: 'stopped'})).toBe('DS_BAD_SIGNATURE')
    expect(code({...signed, services: [{...signed.services[0]!, digest: D1}]})).toBe('DS_BAD_SIGNATURE')
    expect(code(await signDocument(doc(), other))).toBe('DS_UNKNOWN_KEY')
    expect(code(await signDocument(doc({node_id: 'SG-MAS-01'}), signer))).toBe('DS_WRONG_NODE')
    expect(code(signed, check({now: new Date(clock.now().getTime() + 3_600_000)}))).toBe('DS_EXPIRED')
    expect(code(signed, check({lastSequence: 8}))).toBe('DS_REPLAY')
    expect(code({...signed, kind: 'jil.stack/v1'} as unknown as DesiredState)).toBe('DS_MALFORMED')
    expect(code(await signDocument(doc({services: [api({digest: 'latest'})]}), signer))).toBe('DS_MALFORMED')
    // A key retired before the document was issued no longer signs documents.
    expect(code(signed, check({keys: [{...keys[0]!, retired_at: new Date(clock.now().getTime() - 1000).toISOString()}]}))).toBe('DS_UNKNOWN_KEY')
  })

  it('a lower version needs a valid rollback signature by an ops-lead for exactly that service, digest and version', async () => {
    const lower = api({digest: D1, version: 'v95.1'})
    const code = async (s: DesiredService, c = check()) => {
      const r = verifyDesiredState(await signDocument(doc({services: [s]}), signer), c)
      if (!r.ok) return r.code
      // A refused service does not refuse the document: the rest of it (run mode…) still applies.
      return r.refused.length ? r.refused.map((x) => `${x.service}:${x.code}`).join(',') : 'ok'
    }
    expect(await code(lower)).toBe('api:DS_ROLLBACK_UNSIGNED')
    const payload = rollbackPayload('mainnet', 'api', 'jil/api', D1, 'v95.1')
    expect(await code({...lower, rollback: signAsUser(payload, {cert: ops.pem, key: ops.keyPem})})).toBe('ok')
    // A viewer may not sign one; one for another digest, version or track does not count.
    expect(await code({...lower, rollback: signAsUser(payload, {cert: viewer.pem, key: viewer.keyPem})})).toBe('api:DS_ROLLBACK_UNSIGNED')
    expect(await code({...lower, rollback: signAsUser({...payload, digest: D2}, {cert: ops.pem, key: ops.keyPem})})).toBe('api:DS_ROLLBACK_UNSIGNED')
    expect(await code({...lower, rollback: signAsUser({...payload, track: 'testnet'}, {cert: ops.pem, key: ops.keyPem})})).toBe('api:DS_ROLLBACK_UNSIGNED')
    // A revoked signer's rollback is refused.
    expect(await code({...lower, rollback: signAsUser(payload, {cert: ops.pem, key: ops.keyPem})}, check({isRevoked: () => true}))).toBe('api:DS_ROLLBACK_UNSIGNED')
    // The same or a higher version needs none; a service not running yet needs none.
    expect(await code(api({version: 'v95.2'}))).toBe('ok')
    expect(await code(api({name: 'web', image: 'jil/web', version: 'v1'}))).toBe('ok')
    // Removing a service and adding it back lower (or under another name) is a rollback too: the image's floor.
    expect(await code(api({name: 'api-b', version: 'v95.1'}), check({floors: new Map([['jil/api', 'v95.2']])}))).toBe('api-b:DS_ROLLBACK_UNSIGNED')
    // The signer's certificate is judged when HQ accepted the rollback, not now: it may have expired since.
    const late = check({now: new Date(clock.now().getTime() + 400 * 86_400_000), lastSequence: 0})
    const signed = {...lower, rollback: signAsUser(payload, {cert: ops.pem, key: ops.keyPem})}
    const fresh = (s: DesiredService) => signDocument(doc({services: [s], expires_at: new Date(late.now.getTime() + 3_600_000).toISOString()}), signer)
    expect(verifyDesiredState(await fresh(signed), late)).toMatchObject({ok: true, refused: [{service: 'api'}]})
    expect(verifyDesiredState(await fresh({...signed, rollback_at: clock.now().toISOString()}), late)).toEqual({ok: true, refused: []})
  })

  it('refuses a document for another track or zone', async () => {
    const r = verifyDesiredState(await signDocument(doc({track: 'testnet'}), signer), check())
    expect(r).toMatchObject({ok: false, code: 'DS_WRONG_NODE'})
    expect(verifyDesiredState(await signDocument(doc({zone: 'SG/MAS'}), signer), check())).toMatchObject({ok: false, code: 'DS_WRONG_NODE'})
  })

  it('a signature over a stack record is not good for a desired state', async () => {
    const rec = await signDocument({kind: 'jil.stack/v1', track: 'mainnet', version: 1, spec: {services: [api()]}, created_at: clock.now().toISOString(), created_by: 'olga'} as Omit<StackRecord, 'key_id' | 'signature'>, signer)
    expect(verifyStackRecord(rec as StackRecord, keys)).toBe(true)
    expect(verifyStackRecord({...rec, version: 2} as StackRecord, keys)).toBe(false)
    const asDoc = {...doc(), key_id: rec.key_id, signature: rec.signature} as DesiredState
    expect(verifyDesiredState(asDoc, check())).toMatchObject({ok: false, code: 'DS_BAD_SIGNATURE'})
  })

  it('the spec hash changes with the digest or any spec field, not with the version label or rollback', () => {
    const h = serviceSpecHash(api())
    expect(serviceSpecHash(api())).toBe(h)
    expect(serviceSpecHash(api({digest: D1}))).not.toBe(h)
    expect(serviceSpecHash(api({env: {A: '1'}}))).not.toBe(h)
    expect(serviceSpecHash(api({command: ['sleep', '1']}))).not.toBe(h)
    expect(serviceSpecHash(api({version: 'v99'}))).toBe(h)
  })
})
