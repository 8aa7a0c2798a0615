import 'reflect-metadata'

import {randomBytes, webcrypto} from 'node:crypto'

import * as x509 from '@peculiar/x509'

import type {Clock} from '../../shared/clock.js'
import {JilError} from '../../shared/errors.js'
import {certFingerprint, identityUri, normalizeSerial, type Role} from '../../shared/pki.js'
import {generateP256Key, importP256SigningKey} from '../../shared/csr.js'

/** HQ's CA key, for issuing certificates and signing the CRL. */
export function importCaKey(pem: string): Promise<CryptoKey> {
  return importP256SigningKey(pem, {what: 'CA key', hint: 'restore ca.key from a backup of the HQ data dir'})
}

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const EC: EcKeyGenParams & EcdsaParams = {name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256'}
const DAY = 86_400_000

/** A certificate the CA issued, with what the certificates table records of it. */
export type IssuedCert = {
  pem: string
  serial: string
  fingerprint: string
  subject: string
  notBefore: Date
  notAfter: Date
}

export type KeyPairPem = {certPem: string; keyPem: string}

export type IssuedWithKey = IssuedCert & {keyPem: string}

/** Lifetimes (DESIGN.md §4). */
export const LIFETIME_DAYS = {ca: 3650, server: 90, user: 90, node: 30} as const

/** A positive 128-bit serial whose first hex digit is never zero, so every tool prints it alike. */
function newSerial(): string {
  const b = randomBytes(16)
  b[0] = (b[0]! & 0x7f) | 0x40
  return b.toString('hex')
}

function toIssued(cert: x509.X509Certificate): IssuedCert {
  return {
    pem: cert.toString('pem') + '\n',
    serial: normalizeSerial(cert.serialNumber),
    fingerprint: certFingerprint(new Uint8Array(cert.rawData)),
    subject: cert.subject,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  }
}

/** Creates the self-signed ECDSA P-256 root of an HQ. */
export async function createCa(clock: Clock, name = 'jil HQ CA'): Promise<KeyPairPem & {fingerprint: string}> {
  const {keys, keyPem} = await generateP256Key()
  const now = clock.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: newSerial(),
    name: [{CN: [name]}, {O: ['jil']}],
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + LIFETIME_DAYS.ca * DAY),
    signingAlgorithm: EC,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  const certPem = cert.toString('pem') + '\n'
  return {certPem, keyPem, fingerprint: certFingerprint(certPem)}
}

type IssueParams = {
  subject: x509.JsonName
  sans: x509.JsonGeneralName[]
  usage: 'server' | 'client'
  lifetimeDays: number
  /** The requester's key (from its CSR); absent: the CA makes a key pair and returns its private half. */
  publicKey?: x509.PublicKey
  /** Backdate/expire explicitly (tests of expired certs use the clock instead). */
  notBefore?: Date
}

/** The CA: signs node, user and server certificates with HQ's root key. */
export class CertificateAuthority {
  private constructor(
    readonly certPem: string,
    readonly fingerprint: string,
    private readonly cert: x509.X509Certificate,
    private readonly key: CryptoKey,
    private readonly clock: Clock,
  ) {}

  static async load(pair: KeyPairPem, clock: Clock): Promise<CertificateAuthority> {
    let cert: x509.X509Certificate
    try {
      cert = new x509.X509Certificate(pair.certPem)
    } catch (err) {
      throw new JilError('CERT_INVALID', 'the CA certificate cannot be parsed', {hint: 'restore ca.crt from a backup of the HQ data dir', cause: err})
    }
    return new CertificateAuthority(pair.certPem, certFingerprint(pair.certPem), cert, await importCaKey(pair.keyPem), clock)
  }

  /** HQ's TLS server certificate: SAN = the hostnames plus localhost and 127.0.0.1. */
  issueServer(hostnames: readonly string[], lifetimeDays: number = LIFETIME_DAYS.server): Promise<IssuedWithKey> {
    const names = [...new Set([...hostnames, 'localhost', '127.0.0.1'])]
    return this.issue({
      subject: [{CN: [names[0]!]}, {O: ['jil']}],
      sans: names.map((n) => ({type: isIp(n) ? 'ip' : 'dns', value: n}) as x509.JsonGeneralName),
      usage: 'server',
      lifetimeDays,
    })
  }

  /** A user's client certificate: SAN URI jil://user/NAME, role in the subject OU. */
  issueUser(name: string, role: Role, lifetimeDays: number = LIFETIME_DAYS.user, notBefore?: Date): Promise<IssuedWithKey> {
    return this.issue({
      subject: [{CN: [name]}, {OU: [role]}, {O: ['jil']}],
      sans: [{type: 'url', value: identityUri({kind: 'user', name})}],
      usage: 'client',
      lifetimeDays,
      ...(notBefore ? {notBefore} : {}),
    })
  }

  /** A user's certificate for the key in their CSR. */
  async issueUserForKey(name: string, role: Role, publicKey: x509.PublicKey, lifetimeDays: number = LIFETIME_DAYS.user): Promise<IssuedCert> {
    const {keyPem: _none, ...cert} = await this.issue({
      subject: [{CN: [name]}, {OU: [role]}, {O: ['jil']}],
      sans: [{type: 'url', value: identityUri({kind: 'user', name})}],
      usage: 'client',
      lifetimeDays,
      publicKey,
    })
    return cert
  }

  /** A node's certificate (DESIGN.md §4): CN = node id, SAN URI jil://node/ID, O = zone. */
  async issueNode(nodeId: string, zone: string, publicKey: x509.PublicKey, lifetimeDays: number = LIFETIME_DAYS.node): Promise<IssuedCert> {
    const {keyPem: _none, ...cert} = await this.issue({
      subject: [{CN: [nodeId]}, {O: [zone]}],
      sans: [{type: 'url', value: identityUri({kind: 'node', id: nodeId})}],
      usage: 'client',
      lifetimeDays,
      publicKey,
    })
    return cert
  }

  /** The CA certificate and key, for signing the CRL. */
  get signingMaterial(): {cert: x509.X509Certificate; key: CryptoKey} {
    return {cert: this.cert, key: this.key}
  }

  private async issue(p: IssueParams): Promise<IssuedWithKey> {
    const fresh = p.publicKey ? undefined : await generateP256Key()
    const keys = fresh?.keys
    const start = p.notBefore ?? new Date(this.clock.now().getTime() - 60_000)
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: newSerial(),
      subject: p.subject,
      issuer: this.cert.subject,
      notBefore: start,
      notAfter: new Date(start.getTime() + 60_000 + p.lifetimeDays * DAY),
      signingAlgorithm: EC,
      publicKey: p.publicKey ?? keys!.publicKey,
      signingKey: this.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([p.usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension(p.sans),
        await x509.AuthorityKeyIdentifierExtension.create(this.cert.publicKey),
      ],
    })
    return {...toIssued(cert), keyPem: fresh?.keyPem ?? ''}
  }
}

function isIp(s: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(s) || s.includes(':')
}
