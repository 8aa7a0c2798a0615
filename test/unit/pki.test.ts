import {createHash, X509Certificate} from 'node:crypto'

import {describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa} from '../../src/hq/ca/ca.js'
import {ManualClock} from '../../src/shared/clock.js'
import {certFingerprint, certInfo, isFingerprint, normalizeSerial, pemToDer, principalOf} from '../../src/shared/pki.js'

describe('certificates', () => {
  const clock = new ManualClock('2026-11-27T12:00:00Z')

  it('fingerprints a CA as sha256: + hex SHA-256 of its DER', async () => {
    const ca = await createCa(clock)
    const der = new X509Certificate(ca.certPem).raw
    expect(ca.fingerprint).toBe('sha256:' + createHash('sha256').update(der).digest('hex'))
    expect(certFingerprint(ca.certPem)).toBe(ca.fingerprint)
    expect(isFingerprint(ca.fingerprint)).toBe(true)
    expect(isFingerprint('sha256:ABC')).toBe(false)
  })

  it('makes a self-signed P-256 CA that signs user and server certificates', async () => {
    const pair = await createCa(clock)
    const ca = await CertificateAuthority.load(pair, clock)
    const caCert = new X509Certificate(pair.certPem)
    expect(caCert.ca).toBe(true)
    expect(caCert.publicKey.asymmetricKeyDetails).toMatchObject({namedCurve: 'prime256v1'})

    const alice = await ca.issueUser('alice', 'security-lead')
    const cert = new X509Certificate(alice.pem)
    expect(cert.verify(caCert.publicKey)).toBe(true)
    expect(cert.checkIssued(caCert)).toBe(true)
    expect(cert.subjectAltName).toBe('URI:jil://user/alice')
    expect(cert.subject).toContain('OU=security-lead')
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2'])
    expect(new Date(cert.validTo).getTime() - clock.now().getTime()).toBeGreaterThanOrEqual(90 * 86_400_000)
    expect(certInfo(alice.pem)).toMatchObject({serial: alice.serial, fingerprint: alice.fingerprint, principal: {kind: 'user', name: 'alice', role: 'security-lead'}})

    const server = await ca.issueServer(['hq.example.com', '10.1.2.3'])
    const s = new X509Certificate(server.pem)
    expect(s.subjectAltName).toBe('DNS:hq.example.com, IP Address:10.1.2.3, DNS:localhost, IP Address:127.0.0.1')
    expect(s.checkHost('hq.example.com')).toBe('hq.example.com')
    expect(s.checkIP('127.0.0.1')).toBe('127.0.0.1')
    expect(s.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1'])
    expect(certInfo(server.pem).principal).toBeUndefined()
  })

  it('never issues two certificates with one serial, and writes serials as Node reads them', async () => {
    const ca = await CertificateAuthority.load(await createCa(clock), clock)
    const serials = new Set<string>()
    for (let i = 0; i < 20; i++) {
      const c = await ca.issueUser(`u${i}`, 'viewer')
      expect(normalizeSerial(new X509Certificate(c.pem).serialNumber)).toBe(c.serial)
      serials.add(c.serial)
    }
    expect(serials.size).toBe(20)
  })

  it('reads the principal from the SAN URI only', () => {
    expect(principalOf({subjectAltName: 'URI:jil://node/CH-ZUG-01', subject: 'CN=CH-ZUG-01\nO=CH/FINMA'})).toEqual({kind: 'node', id: 'CH-ZUG-01', zone: 'CH/FINMA'})
    expect(principalOf({subjectAltName: 'DNS:jil://user/x', subject: 'CN=x'})).toBeUndefined()
    expect(principalOf({subjectAltName: 'URI:https://user/x', subject: 'CN=x'})).toBeUndefined()
    expect(principalOf({subjectAltName: 'URI:jil://user/../admin', subject: ''})).toBeUndefined()
    expect(principalOf({subjectAltName: undefined, subject: undefined})).toBeUndefined()
  })

  it('normalises serials and rejects non-PEM input', () => {
    expect(normalizeSerial('00AB01')).toBe('ab01')
    expect(normalizeSerial('0')).toBe('0')
    expect(() => pemToDer('not a pem')).toThrow(/no CERTIFICATE PEM block/)
    expect(() => certInfo('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n')).toThrow(expect.objectContaining({code: 'CERT_INVALID'}))
  })

  it('refuses a CA key that is not P-256 PKCS#8', async () => {
    const pair = await createCa(clock)
    await expect(CertificateAuthority.load({certPem: pair.certPem, keyPem: 'garbage'}, clock)).rejects.toMatchObject({code: 'KEY_INVALID'})
  })
})
