import 'reflect-metadata'

import {createPrivateKey, webcrypto, X509Certificate} from 'node:crypto'

import * as x509 from '@peculiar/x509'
import {beforeAll, describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa, type IssuedWithKey, type KeyPairPem} from '../../src/hq/ca/ca.js'
import {ManualClock} from '../../src/shared/clock.js'
import {JilError} from '../../src/shared/errors.js'
import {canonicalBytes} from '../../src/shared/canonical.js'
import {signAsUser, verifyUserSignature, type UserSignature, type UserSignatureCheck} from '../../src/shared/user-signature.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const DAY = 86_400_000
const APPROVERS = ['ops-lead', 'security-lead'] as const

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof JilError) return err.code
    throw err
  }
  return undefined
}

const bundle = (u: IssuedWithKey) => ({cert: u.pem, key: u.keyPem})

describe('user signatures', () => {
  const clock = new ManualClock('2026-11-27T12:00:00Z')
  let pair: KeyPairPem
  let ca: CertificateAuthority
  let ops: IssuedWithKey
  let sec: IssuedWithKey
  let viewer: IssuedWithKey
  let payload: {purpose: string; image: string; digest: string; track: string}

  const check = (over: Partial<UserSignatureCheck> = {}): UserSignatureCheck => ({
    caPem: pair.certPem,
    now: clock.now(),
    purpose: 'approve-release',
    roles: APPROVERS,
    isRevoked: () => false,
    ...over,
  })

  beforeAll(async () => {
    pair = await createCa(clock)
    ca = await CertificateAuthority.load(pair, clock)
    ;[ops, sec, viewer] = await Promise.all([ca.issueUser('olga', 'ops-lead'), ca.issueUser('sam', 'security-lead'), ca.issueUser('vic', 'viewer')])
    payload = {purpose: 'approve-release', image: 'jil/node', digest: 'sha256:' + 'ab'.repeat(32), track: 'mainnet'}
  })

  it('verifies a valid signature and says who signed, with which role', () => {
    const sig = signAsUser(payload, bundle(ops))
    expect(sig.alg).toBe('ES256')
    expect(Buffer.from(sig.signature, 'base64')).toHaveLength(64)
    expect(sig.cert).toBe(ops.pem)
    expect(verifyUserSignature(sig, check())).toEqual({user: 'olga', role: 'ops-lead', serial: ops.serial, fingerprint: ops.fingerprint})
    expect(verifyUserSignature(signAsUser(payload, bundle(sec)), check())).toMatchObject({user: 'sam', role: 'security-lead'})
  })

  it('survives a JSON round trip, and signs the canonical form whatever the key order', async () => {
    const sig = signAsUser({track: 'mainnet', purpose: 'approve-release', nested: {b: 1, a: [1, 2, {z: null, y: 'é'}]}, skip: undefined}, bundle(ops))
    const back = JSON.parse(JSON.stringify(sig)) as UserSignature
    expect(verifyUserSignature(back, check())).toMatchObject({user: 'olga'})
    expect(back.payload).toEqual({track: 'mainnet', purpose: 'approve-release', nested: {b: 1, a: [1, 2, {z: null, y: 'é'}]}})
    // Re-ordering keys does not change the canonical bytes, so the signature still holds.
    const reordered = {...back, payload: {nested: back.payload.nested, purpose: 'approve-release', track: 'mainnet'}}
    expect(verifyUserSignature(reordered, check())).toMatchObject({user: 'olga'})
    // An ordinary ES256 (P1363) signature over the RFC 8785 bytes: WebCrypto verifies it independently.
    const spki = new X509Certificate(ops.pem).publicKey.export({format: 'der', type: 'spki'})
    const pub = await webcrypto.subtle.importKey('spki', spki, {name: 'ECDSA', namedCurve: 'P-256'}, false, ['verify'])
    expect(await webcrypto.subtle.verify({name: 'ECDSA', hash: 'SHA-256'}, pub, Buffer.from(sig.signature, 'base64'), canonicalBytes(back.payload))).toBe(true)
  })

  it('rejects a tampered payload', () => {
    const sig = signAsUser(payload, bundle(sec))
    expect(codeOf(() => verifyUserSignature({...sig, payload: {...sig.payload, track: 'devnet'}}, check()))).toBe('SIGNATURE_INVALID')
    expect(codeOf(() => verifyUserSignature({...sig, payload: {...sig.payload, extra: 1}}, check()))).toBe('SIGNATURE_INVALID')
    const bytes = Buffer.from(sig.signature, 'base64')
    bytes[10] = bytes[10]! ^ 1
    expect(codeOf(() => verifyUserSignature({...sig, signature: bytes.toString('base64')}, check()))).toBe('SIGNATURE_INVALID')
  })

  it('rejects malformed signatures as SIGNATURE_INVALID', () => {
    const sig = signAsUser(payload, bundle(sec))
    expect(codeOf(() => verifyUserSignature({...sig, alg: 'ES384'} as never, check()))).toBe('SIGNATURE_INVALID')
    expect(codeOf(() => verifyUserSignature({...sig, signature: sig.signature.slice(4)}, check()))).toBe('SIGNATURE_INVALID')
    expect(codeOf(() => verifyUserSignature({...sig, payload: null} as never, check()))).toBe('SIGNATURE_INVALID')
    expect(codeOf(() => verifyUserSignature({...sig, cert: undefined} as never, check()))).toBe('SIGNATURE_INVALID')
    expect(codeOf(() => verifyUserSignature(null as never, check()))).toBe('SIGNATURE_INVALID')
  })

  it('rejects a signature by key A with cert B attached', () => {
    const sig = signAsUser(payload, bundle(ops))
    expect(codeOf(() => verifyUserSignature({...sig, cert: sec.pem}, check()))).toBe('SIGNATURE_INVALID')
  })

  it('refuses to sign with a key that does not belong to the cert', () => {
    expect(codeOf(() => signAsUser(payload, {cert: sec.pem, key: ops.keyPem}))).toBe('KEY_MISMATCH')
  })

  it('rejects a cert from another CA, even one with the same name', async () => {
    const other = await CertificateAuthority.load(await createCa(clock), clock)
    const mallory = await other.issueUser('olga', 'security-lead')
    expect(codeOf(() => verifyUserSignature(signAsUser(payload, bundle(mallory)), check()))).toBe('SIGNER_NOT_TRUSTED')
    expect(codeOf(() => verifyUserSignature({...signAsUser(payload, bundle(ops)), cert: 'not a cert'}, check()))).toBe('SIGNER_NOT_TRUSTED')
  })

  it('rejects a revoked signer', () => {
    const sig = signAsUser(payload, bundle(sec))
    const revoked = new Set([sec.serial])
    expect(codeOf(() => verifyUserSignature(sig, check({isRevoked: (s) => revoked.has(s)})))).toBe('SIGNER_REVOKED')
    expect(verifyUserSignature(signAsUser(payload, bundle(ops)), check({isRevoked: (s) => revoked.has(s)}))).toMatchObject({user: 'olga'})
  })

  it('rejects a signer whose role may not sign this', () => {
    expect(codeOf(() => verifyUserSignature(signAsUser(payload, bundle(viewer)), check()))).toBe('SIGNER_ROLE')
    expect(codeOf(() => verifyUserSignature(signAsUser(payload, bundle(ops)), check({roles: ['security-lead']})))).toBe('SIGNER_ROLE')
    expect(verifyUserSignature(signAsUser(payload, bundle(viewer)), check({roles: ['viewer']}))).toMatchObject({user: 'vic', role: 'viewer'})
  })

  it('rejects a cert that is expired or not yet valid at `now`', async () => {
    const past = new ManualClock('2026-01-01T00:00:00Z')
    const oldCa = await CertificateAuthority.load(pair, past)
    const old = await oldCa.issueUser('olga', 'ops-lead', 30)
    const sig = signAsUser(payload, bundle(old))
    expect(codeOf(() => verifyUserSignature(sig, check()))).toBe('SIGNER_EXPIRED')
    // The same signature was fine while the cert was valid.
    expect(verifyUserSignature(sig, check({now: new Date('2026-01-15T00:00:00Z')}))).toMatchObject({user: 'olga'})

    const future = await ca.issueUser('fut', 'ops-lead', 90, new Date(clock.now().getTime() + 10 * DAY))
    expect(codeOf(() => verifyUserSignature(signAsUser(payload, bundle(future)), check()))).toBe('SIGNER_EXPIRED')
  })

  it('rejects a signature made for another purpose', () => {
    const sig = signAsUser({...payload, purpose: 'rollback'}, bundle(sec))
    expect(codeOf(() => verifyUserSignature(sig, check()))).toBe('PURPOSE_MISMATCH')
    expect(verifyUserSignature(sig, check({purpose: 'rollback'}))).toMatchObject({user: 'sam'})
  })

  it('rejects certs of the CA that are not users: the server cert and a node cert', async () => {
    const server = await ca.issueServer(['hq.example.com'])
    expect(codeOf(() => verifyUserSignature(signAsUser(payload, bundle(server)), check()))).toBe('SIGNER_NOT_USER')

    // A node cert (SAN jil://node/ID, subject OU forged to a role) made with the CA key directly.
    const caCert = new x509.X509Certificate(pair.certPem)
    const caKey = await webcrypto.subtle.importKey(
      'pkcs8',
      createPrivateKey(pair.keyPem).export({format: 'der', type: 'pkcs8'}),
      {name: 'ECDSA', namedCurve: 'P-256'},
      false,
      ['sign'],
    )
    const keys = (await webcrypto.subtle.generateKey({name: 'ECDSA', namedCurve: 'P-256'}, true, ['sign', 'verify'])) as CryptoKeyPair
    const node = await x509.X509CertificateGenerator.create({
      serialNumber: '0a1b2c',
      subject: [{CN: ['node-7']}, {OU: ['security-lead']}, {O: ['zone-eu']}],
      issuer: caCert.subject,
      notBefore: new Date(clock.now().getTime() - DAY),
      notAfter: new Date(clock.now().getTime() + 30 * DAY),
      signingAlgorithm: {name: 'ECDSA', hash: 'SHA-256'},
      publicKey: keys.publicKey,
      signingKey: caKey as CryptoKey,
      extensions: [new x509.SubjectAlternativeNameExtension([{type: 'url', value: 'jil://node/node-7'}]), await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey)],
    })
    const nodeKeyPem = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY')
    const sig = signAsUser(payload, {cert: node.toString('pem'), key: nodeKeyPem})
    expect(codeOf(() => verifyUserSignature(sig, check({roles: ['security-lead']})))).toBe('SIGNER_NOT_USER')
  })

  it('gives errors a status and a one-line message', () => {
    try {
      verifyUserSignature(signAsUser(payload, bundle(viewer)), check())
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(JilError)
      const e = err as JilError
      expect(e.status).toBe(403)
      expect(e.message).toContain('vic')
      expect(e.message).toContain('viewer')
    }
  })
})
