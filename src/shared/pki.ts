import {createHash, X509Certificate} from 'node:crypto'

import {JilError} from './errors.js'

/** What a client certificate says about who presents it (DESIGN.md §4). */
export type CertPrincipal =
  | {kind: 'user'; name: string; role: string | undefined}
  | {kind: 'node'; id: string; zone: string | undefined}

export const ROLES = ['admin', 'ops-lead', 'security-lead', 'ci-pipeline', 'viewer'] as const
export type Role = (typeof ROLES)[number]

export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s)
}

/** The DER bytes of the first PEM block of `type` in `pem`. */
export function pemToDer(pem: string, type = 'CERTIFICATE'): Buffer {
  const m = new RegExp(`-----BEGIN ${type}-----([A-Za-z0-9+/=\\s]+)-----END ${type}-----`).exec(pem)
  if (!m) throw new JilError('PEM_INVALID', `no ${type} PEM block found`, {hint: 'check the file is a PEM certificate'})
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')
}

export function derToPem(der: Uint8Array, type = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der).toString('base64')
  return `-----BEGIN ${type}-----\n${b64.replace(/.{1,64}/g, '$&\n')}-----END ${type}-----\n`
}

/** `sha256:` + lowercase hex SHA-256 of the certificate's DER: what nodes pin for HQ's CA. */
export function certFingerprint(certPemOrDer: string | Uint8Array): string {
  const der = typeof certPemOrDer === 'string' ? pemToDer(certPemOrDer) : certPemOrDer
  return 'sha256:' + createHash('sha256').update(der).digest('hex')
}

export function isFingerprint(s: string): boolean {
  return /^sha256:[0-9a-f]{64}$/.test(s)
}

/** Serials are compared as lower-case hex without leading zeros (Node prints upper-case, x509 lower). */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '')
}

/** The SAN URI of a jil identity, e.g. jil://user/alice. */
export function identityUri(p: {kind: 'user'; name: string} | {kind: 'node'; id: string}): string {
  return p.kind === 'user' ? `jil://user/${p.name}` : `jil://node/${p.id}`
}

/**
 * Reads the jil principal of a certificate from its SAN URI (`jil://user/NAME` or `jil://node/ID`),
 * the role from the subject OU and the zone from the subject O. Returns undefined for a certificate
 * with no jil identity (HQ's server cert, a foreign cert).
 */
export function principalOf(fields: {subjectAltName: string | undefined; subject: string | undefined}): CertPrincipal | undefined {
  const uris = (fields.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4))
  const subject = parseSubject(fields.subject ?? '')
  for (const uri of uris) {
    const m = /^jil:\/\/(user|node)\/([A-Za-z0-9._-]+)$/.exec(uri)
    if (!m) continue
    if (m[1] === 'user') return {kind: 'user', name: m[2]!, role: subject.OU}
    return {kind: 'node', id: m[2]!, zone: subject.O}
  }
  return undefined
}

/** Node's X509Certificate.subject is "CN=a\nOU=b" lines. */
function parseSubject(subject: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of subject.split('\n')) {
    const i = line.indexOf('=')
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1)
  }
  return out
}

export type CertInfo = {
  serial: string
  fingerprint: string
  subject: string
  notBefore: Date
  notAfter: Date
  principal: CertPrincipal | undefined
}

/** Facts about a PEM certificate, read with node:crypto (no x509 library on the CLI's fast paths). */
export function certInfo(pem: string): CertInfo {
  let c: X509Certificate
  try {
    c = new X509Certificate(pem)
  } catch (err) {
    throw new JilError('CERT_INVALID', 'the certificate cannot be parsed', {hint: 'check the bundle or certificate file', cause: err})
  }
  return {
    serial: normalizeSerial(c.serialNumber),
    fingerprint: certFingerprint(new Uint8Array(c.raw)),
    subject: c.subject,
    notBefore: new Date(c.validFrom),
    notAfter: new Date(c.validTo),
    principal: principalOf({subjectAltName: c.subjectAltName, subject: c.subject}),
  }
}

/** When a certificate is due for renewal: at 2/3 of its lifetime (as step-ca's renewer does), for nodes, users and HQ alike. */
export function renewalTime(cert: {notBefore: Date; notAfter: Date}): Date {
  const from = cert.notBefore.getTime()
  return new Date(from + ((cert.notAfter.getTime() - from) * 2) / 3)
}

export function renewalDue(cert: {notBefore: Date; notAfter: Date}, now: Date): boolean {
  return now.getTime() >= renewalTime(cert).getTime()
}
