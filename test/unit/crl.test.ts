import 'reflect-metadata'

import {webcrypto} from 'node:crypto'
import {once} from 'node:events'
import type {AddressInfo} from 'node:net'
import tls from 'node:tls'

import * as x509 from '@peculiar/x509'
import {beforeAll, describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa, type IssuedWithKey, type KeyPairPem} from '../../src/hq/ca/ca.js'
import {signCrl} from '../../src/hq/ca/crl.js'
import {ManualClock} from '../../src/shared/clock.js'
import {JilError} from '../../src/shared/errors.js'
import {normalizeSerial} from '../../src/shared/pki.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const HOUR = 3_600_000

describe('CRL', () => {
  const clock = new ManualClock('2026-11-27T12:00:00Z')
  let pair: KeyPairPem
  let ca: CertificateAuthority
  let caCert: x509.X509Certificate
  let alice: IssuedWithKey
  let bob: IssuedWithKey
  let carol: IssuedWithKey

  beforeAll(async () => {
    pair = await createCa(clock)
    ca = await CertificateAuthority.load(pair, clock)
    caCert = new x509.X509Certificate(pair.certPem)
    ;[alice, bob, carol] = await Promise.all([ca.issueUser('alice', 'admin'), ca.issueUser('bob', 'viewer'), ca.issueUser('carol', 'ops-lead')])
  })

  const sign = (revoked: Parameters<typeof signCrl>[0]['revoked'], number = 7) =>
    signCrl({caCertPem: pair.certPem, caKeyPem: pair.keyPem, revoked, number, now: clock.now(), validForMs: 24 * HOUR})

  it('signs a CRL that x509 parses back: issuer, entries, signature, times, extensions', async () => {
    const signed = await sign([
      {serial: alice.serial, revokedAt: new Date('2026-11-20T10:00:00Z'), reason: 'keyCompromise'},
      // Upper case and a leading zero: still the same serial.
      {serial: '00' + bob.serial.toUpperCase(), revokedAt: new Date('2026-11-21T10:00:00Z')},
    ])
    expect(signed.number).toBe(7)
    expect(signed.thisUpdate).toEqual(clock.now())
    expect(signed.nextUpdate).toEqual(new Date(clock.now().getTime() + 24 * HOUR))

    const crl = new x509.X509Crl(signed.der)
    expect(crl.issuer).toBe(caCert.subject)
    expect(Buffer.from(crl.issuerName.toArrayBuffer())).toEqual(Buffer.from(caCert.subjectName.toArrayBuffer()))
    expect(crl.thisUpdate).toEqual(clock.now())
    expect(crl.nextUpdate).toEqual(signed.nextUpdate)
    expect(await crl.verify({publicKey: caCert.publicKey})).toBe(true)
    expect(crl.signatureAlgorithm).toMatchObject({name: 'ECDSA', hash: {name: 'SHA-256'}})

    expect(crl.entries.map((e) => normalizeSerial(e.serialNumber)).sort()).toEqual([alice.serial, bob.serial].sort())
    const a = crl.findRevoked(alice.serial)!
    expect(a.revocationDate).toEqual(new Date('2026-11-20T10:00:00Z'))
    expect(a.reason).toBe(x509.X509CrlReason.keyCompromise)
    // No reason given: an explicit `unspecified`, so no entry has an empty extensions SEQUENCE (RFC 5280: SIZE 1..MAX).
    expect(crl.findRevoked(bob.serial)!.reason).toBe(x509.X509CrlReason.unspecified)
    for (const e of crl.entries) expect(e.extensions.length).toBeGreaterThan(0)
    expect(crl.findRevoked(carol.serial)).toBeNull()
    expect(crl.findRevoked(new x509.X509Certificate(alice.pem))).not.toBeNull()

    // CRL number 7 (DER INTEGER 02 01 07) and the authority key identifier = the CA's SKI.
    const num = crl.getExtension('2.5.29.20')!
    expect(Buffer.from(num.value).toString('hex')).toBe('020107')
    const aki = crl.getExtension(x509.AuthorityKeyIdentifierExtension)!
    expect(aki.keyId).toBe(caCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId)

    // A CRL signed by another CA does not verify with this CA's key.
    const other = await createCa(clock)
    const foreign = await signCrl({caCertPem: other.certPem, caKeyPem: other.keyPem, revoked: [], number: 1, now: clock.now(), validForMs: HOUR})
    expect(await new x509.X509Crl(foreign.der).verify({publicKey: caCert.publicKey})).toBe(false)
  })

  it('writes PEM with the X509 CRL label, the same DER inside', async () => {
    const signed = await sign([{serial: alice.serial, revokedAt: clock.now()}])
    expect(signed.pem.startsWith('-----BEGIN X509 CRL-----\n')).toBe(true)
    expect(signed.pem.trimEnd().endsWith('-----END X509 CRL-----')).toBe(true)
    expect(new Uint8Array(new x509.X509Crl(signed.pem).rawData)).toEqual(signed.der)
  })

  it('encodes large CRL numbers and those with the high bit set', async () => {
    for (const [n, hex] of [
      [0, '020100'],
      [128, '02020080'],
      [65_535, '020300ffff'],
      [Number.MAX_SAFE_INTEGER, '02071fffffffffffff'],
    ] as const) {
      const crl = new x509.X509Crl((await sign([], n)).der)
      expect(Buffer.from(crl.getExtension('2.5.29.20')!.value).toString('hex')).toBe(hex)
    }
    await expect(sign([], -1)).rejects.toBeInstanceOf(JilError)
    await expect(sign([], 1.5)).rejects.toBeInstanceOf(JilError)
  })

  it('keeps one entry per serial, the earliest revocation', async () => {
    const crl = new x509.X509Crl(
      (
        await sign([
          {serial: alice.serial, revokedAt: new Date('2026-11-22T00:00:00Z')},
          {serial: alice.serial.toUpperCase(), revokedAt: new Date('2026-11-21T00:00:00Z'), reason: 'superseded'},
        ])
      ).der,
    )
    expect(crl.entries).toHaveLength(1)
    expect(crl.entries[0]!.revocationDate).toEqual(new Date('2026-11-21T00:00:00Z'))
    expect(crl.entries[0]!.reason).toBe(x509.X509CrlReason.superseded)
  })

  it('reports the times as written: X.509 times have whole seconds', async () => {
    const now = new Date('2026-11-27T12:00:00.789Z')
    const signed = await signCrl({caCertPem: pair.certPem, caKeyPem: pair.keyPem, revoked: [], number: 1, now, validForMs: HOUR + 500})
    expect(signed.thisUpdate).toEqual(new Date('2026-11-27T12:00:00Z'))
    expect(signed.nextUpdate).toEqual(new Date('2026-11-27T13:00:01Z'))
  })

  it('signs an empty CRL', async () => {
    const signed = await sign([])
    const crl = new x509.X509Crl(signed.der)
    expect(crl.entries).toHaveLength(0)
    expect(await crl.verify({publicKey: caCert.publicKey})).toBe(true)
    expect(() => tls.createSecureContext({ca: pair.certPem, crl: signed.pem})).not.toThrow()
  })

  it("is accepted by Node's TLS stack, which then refuses the revoked client and admits the others", async () => {
    const signed = await sign([
      {serial: alice.serial, revokedAt: clock.now(), reason: 'cessationOfOperation'},
      {serial: bob.serial, revokedAt: clock.now(), reason: 'unspecified'},
    ])
    expect(() => tls.createSecureContext({ca: pair.certPem, crl: signed.pem})).not.toThrow()
    // (node:tls reads `crl` as PEM only: DER bytes give "Failed to parse CRL".)

    // A handshake: OpenSSL checks thisUpdate..nextUpdate and the certs' validity against the real clock,
    // so this part uses certs and a CRL made for the real time.
    const now = new Date()
    const realCa = await CertificateAuthority.load(pair, {now: () => now})
    const [liveAlice, liveCarol, liveServer] = await Promise.all([realCa.issueUser('alice', 'admin'), realCa.issueUser('carol', 'ops-lead'), realCa.issueServer(['localhost'])])
    const revokedLive = await signCrl({
      caCertPem: pair.certPem,
      caKeyPem: pair.keyPem,
      revoked: [{serial: liveAlice.serial, revokedAt: now}],
      number: 9,
      now: new Date(now.getTime() - HOUR),
      validForMs: 2 * HOUR,
    })

    const srv = tls.createServer({cert: liveServer.pem, key: liveServer.keyPem, ca: pair.certPem, crl: revokedLive.pem, requestCert: true, rejectUnauthorized: false})
    srv.on('secureConnection', (s: tls.TLSSocket) => {
      s.end(s.authorized ? 'ok' : `no:${String(s.authorizationError)}`)
    })
    srv.listen(0, '127.0.0.1')
    await once(srv, 'listening')
    const port = (srv.address() as AddressInfo).port
    const hello = async (who: IssuedWithKey): Promise<string> => {
      const c = tls.connect({port, host: '127.0.0.1', servername: 'localhost', ca: pair.certPem, cert: who.pem, key: who.keyPem})
      let out = ''
      c.setEncoding('utf8')
      c.on('data', (d: string) => (out += d))
      await once(c, 'end')
      c.destroy()
      return out
    }
    try {
      expect(await hello(liveCarol)).toBe('ok')
      expect(await hello(liveAlice)).toBe('no:CERT_REVOKED')
    } finally {
      srv.close()
    }
  })

  it('refuses a key that is not the CA key format', async () => {
    await expect(signCrl({caCertPem: pair.certPem, caKeyPem: 'nope', revoked: [], number: 1, now: clock.now(), validForMs: HOUR})).rejects.toMatchObject({code: 'KEY_INVALID'})
    await expect(sign([{serial: 'xyz', revokedAt: clock.now()}])).rejects.toMatchObject({code: 'SERIAL_INVALID'})
  })
})
