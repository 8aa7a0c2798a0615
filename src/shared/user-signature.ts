import {createPrivateKey, sign, verify, X509Certificate, type KeyObject} from 'node:crypto'

import {canonicalBytes, canonicalJson} from './canonical.js'
import {JilError} from './errors.js'
import {certFingerprint, isRole, normalizeSerial, principalOf, type Role} from './pki.js'

/**
 * User signatures (DESIGN.md §4): approvals and signed rollbacks are made with the user's own client
 * key (ECDSA P-256, the key of their bundle) over the RFC 8785 JSON of a payload `{purpose, …}`, with
 * the user's certificate attached. Anyone holding HQ's CA (nodes included) verifies them: chain to the
 * CA, valid now, not revoked, a jil user, a role that may sign this, the purpose expected.
 *
 * node:crypto only: this runs on nodes and in the CLI.
 */
export type UserSignature = {
  /** What was signed: the signature is over canonicalJson(payload). */
  payload: Record<string, unknown>
  alg: 'ES256'
  /** Base64 of the IEEE-P1363 r||s signature (64 bytes). */
  signature: string
  /** The signer's certificate, PEM. */
  cert: string
}

export type UserSignatureCheck = {
  /** HQ's CA certificate, PEM. */
  caPem: string
  now: Date
  /** The payload's `purpose` must be exactly this (a signature for one thing is never good for another). */
  purpose: string
  /** Roles allowed to sign this, as written in the signer cert's subject OU. */
  roles: readonly Role[]
  /** Is this serial (lower-case hex, no leading zeros) revoked? */
  isRevoked: (serial: string) => boolean
}

export type VerifiedUserSignature = {user: string; role: Role; serial: string; fingerprint: string}

const P1363_B64 = /^[A-Za-z0-9+/]{86}==$/

/** Signs `payload` as the user of `bundle` (their cert and PKCS#8/SEC1 PEM private key). */
export function signAsUser(payload: Record<string, unknown> & {purpose: string}, bundle: {cert: string; key: string}): UserSignature {
  if (typeof payload.purpose !== 'string' || payload.purpose === '') {
    throw new JilError('PURPOSE_MISSING', 'a signed payload needs a non-empty purpose', {hint: 'this is a bug in the caller'})
  }
  const key = loadEcKey(bundle.key)
  let cert: X509Certificate
  try {
    cert = new X509Certificate(bundle.cert)
  } catch (err) {
    throw new JilError('CERT_INVALID', 'the bundle certificate cannot be parsed', {hint: 'check the bundle file', cause: err})
  }
  if (!cert.checkPrivateKey(key)) {
    throw new JilError('KEY_MISMATCH', "the bundle's key does not belong to its certificate", {hint: 'use the bundle HQ issued, unchanged'})
  }
  // What is stored is exactly what is signed: the canonical form, re-read (drops undefined, Dates → strings…),
  // so the signature survives any JSON round trip.
  const json = canonicalJson(payload)
  const signature = sign('sha256', new TextEncoder().encode(json), {key, dsaEncoding: 'ieee-p1363'})
  return {
    payload: JSON.parse(json) as Record<string, unknown>,
    alg: 'ES256',
    signature: signature.toString('base64'),
    cert: bundle.cert,
  }
}

/**
 * Verifies a user signature against HQ's CA. Throws a JilError with a stable code:
 * SIGNATURE_INVALID (malformed, or the signature does not match the payload and the cert's key),
 * SIGNER_NOT_TRUSTED (the cert was not issued by the CA), SIGNER_EXPIRED (cert not valid at `now`),
 * SIGNER_REVOKED, SIGNER_NOT_USER (no jil://user/ SAN), SIGNER_ROLE (role from the cert's subject OU
 * not in `roles`), PURPOSE_MISMATCH.
 *
 * Order: shape, chain, signature, then facts read from the (now authenticated) cert and payload.
 */
export function verifyUserSignature(sig: UserSignature, check: UserSignatureCheck): VerifiedUserSignature {
  // Shape: this usually arrives as JSON from elsewhere.
  const s = sig as Partial<Record<keyof UserSignature, unknown>> | null
  if (typeof s !== 'object' || s === null) throw invalid('the signature is not an object')
  if (s.alg !== 'ES256') throw invalid(`unsupported signature algorithm ${JSON.stringify(s.alg)}`)
  if (typeof s.signature !== 'string' || !P1363_B64.test(s.signature)) throw invalid('the signature is not base64 of 64 bytes')
  if (typeof s.payload !== 'object' || s.payload === null || Array.isArray(s.payload)) throw invalid('the payload is not an object')
  if (typeof s.cert !== 'string') throw invalid('no signer certificate attached')

  let ca: X509Certificate
  try {
    ca = new X509Certificate(check.caPem)
  } catch (err) {
    throw new JilError('CERT_INVALID', "HQ's CA certificate cannot be parsed", {hint: 'check the pinned CA file', cause: err})
  }

  // Chain: issued and signed by HQ's CA.
  let cert: X509Certificate
  try {
    cert = new X509Certificate(s.cert)
  } catch (err) {
    throw new JilError('SIGNER_NOT_TRUSTED', "the signer's certificate cannot be parsed", {status: 403, cause: err})
  }
  let chained = false
  try {
    chained = cert.checkIssued(ca) && cert.verify(ca.publicKey)
  } catch {
    chained = false
  }
  if (!chained) {
    throw new JilError('SIGNER_NOT_TRUSTED', "the signer's certificate was not issued by this HQ's CA", {
      hint: "check the signature was made with a bundle from this HQ",
      status: 403,
    })
  }

  // Signature over the canonical payload with the cert's key.
  const pub = cert.publicKey
  if (pub.asymmetricKeyType !== 'ec' || pub.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw invalid("the signer's key is not ECDSA P-256")
  }
  let data: Uint8Array
  try {
    data = canonicalBytes(s.payload)
  } catch (err) {
    throw invalid(`the payload cannot be canonicalised: ${(err as Error).message}`)
  }
  let ok = false
  try {
    ok = verify('sha256', data, {key: pub, dsaEncoding: 'ieee-p1363'}, Buffer.from(s.signature, 'base64'))
  } catch {
    ok = false
  }
  if (!ok) throw invalid("the signature does not match the payload and the signer's certificate")

  // Facts of the cert.
  const serial = normalizeSerial(cert.serialNumber)
  const notBefore = new Date(cert.validFrom)
  const notAfter = new Date(cert.validTo)
  const now = check.now.getTime()
  if (!(notBefore.getTime() <= now && now <= notAfter.getTime())) {
    throw new JilError('SIGNER_EXPIRED', `the signer's certificate is not valid at ${check.now.toISOString()} (valid ${notBefore.toISOString()} to ${notAfter.toISOString()})`, {
      hint: 'the signer renews their certificate (jil hq user renew) and signs again',
      status: 403,
    })
  }
  if (check.isRevoked(serial)) {
    throw new JilError('SIGNER_REVOKED', `the signer's certificate ${serial} is revoked`, {status: 403})
  }
  const principal = principalOf({subjectAltName: cert.subjectAltName, subject: cert.subject})
  if (principal?.kind !== 'user') {
    throw new JilError('SIGNER_NOT_USER', "the signer's certificate is not a jil user's (no jil://user/ name)", {
      hint: 'sign with a user bundle, not a node or server certificate',
      status: 403,
    })
  }
  const role = principal.role
  if (role === undefined || !isRole(role) || !check.roles.includes(role)) {
    throw new JilError('SIGNER_ROLE', `${principal.name} signs as ${role ?? 'no role'}; this needs ${check.roles.join(' or ') || 'no one'}`, {
      hint: 'ask someone with one of those roles to sign',
      status: 403,
    })
  }

  // Purpose: a signature for one thing is never good for another.
  const purpose = (s.payload as Record<string, unknown>).purpose
  if (purpose !== check.purpose) {
    throw new JilError('PURPOSE_MISMATCH', `the signature is for ${JSON.stringify(purpose)}, not ${JSON.stringify(check.purpose)}`, {status: 400})
  }

  return {user: principal.name, role, serial, fingerprint: certFingerprint(new Uint8Array(cert.raw))}
}

function invalid(message: string): JilError {
  return new JilError('SIGNATURE_INVALID', message, {status: 400})
}

function loadEcKey(pem: string): KeyObject {
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch (err) {
    throw new JilError('KEY_INVALID', 'the bundle key cannot be read', {hint: 'check the bundle file', cause: err})
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new JilError('KEY_INVALID', 'the bundle key is not an ECDSA P-256 key', {hint: 'use the bundle HQ issued'})
  }
  return key
}
