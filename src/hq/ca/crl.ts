import 'reflect-metadata'

import {webcrypto} from 'node:crypto'

import * as x509 from '@peculiar/x509'

import {JilError} from '../../shared/errors.js'
import {derToPem, normalizeSerial} from '../../shared/pki.js'
import {importCaKey} from './ca.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const EC: EcKeyImportParams & EcdsaParams = {name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256'}
const OID_CRL_NUMBER = '2.5.29.20'
const OID_REASON_CODE = '2.5.29.21'

export type RevokedSerial = {
  /** Lower-case hex (leading zeros and case are normalised anyway). */
  serial: string
  revokedAt: Date
  reason?: 'keyCompromise' | 'cessationOfOperation' | 'superseded' | 'unspecified'
}

export type SignedCrl = {
  der: Uint8Array<ArrayBuffer>
  /** PEM labelled "X509 CRL" (what OpenSSL and node:tls expect; @peculiar/x509 would write "CRL"). */
  pem: string
  number: number
  /** As written in the CRL (X.509 times have whole seconds). */
  thisUpdate: Date
  nextUpdate: Date
}

/**
 * Signs HQ's X.509 v2 CRL (served at GET /v1/ca/crl for brokers and peers, DESIGN.md §4): issuer =
 * the CA's subject (its exact DER), ECDSA P-256 SHA-256, CRL number and authority key identifier
 * extensions, one entry per revoked serial with its reason code (`unspecified` when none is given).
 */
export async function signCrl(p: {
  caCertPem: string
  caKeyPem: string
  revoked: readonly RevokedSerial[]
  number: number
  now: Date
  validForMs: number
}): Promise<SignedCrl> {
  if (!Number.isSafeInteger(p.number) || p.number < 0) throw new JilError('CRL_NUMBER_INVALID', `CRL number ${p.number} is not a non-negative integer`, {status: 500})
  if (!(p.validForMs > 0)) throw new JilError('CRL_VALIDITY_INVALID', 'a CRL must be valid for a positive time', {status: 500})
  let caCert: x509.X509Certificate
  try {
    caCert = new x509.X509Certificate(p.caCertPem)
  } catch (err) {
    throw new JilError('CERT_INVALID', 'the CA certificate cannot be parsed', {hint: 'restore ca.crt from a backup of the HQ data dir', cause: err})
  }
  const signingKey = await importCaKey(p.caKeyPem)

  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension)
  const aki = ski ? new x509.AuthorityKeyIdentifierExtension(ski.keyId) : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey)

  const seen = new Map<string, RevokedSerial>()
  for (const r of [...p.revoked].sort((a, b) => a.revokedAt.getTime() - b.revokedAt.getTime())) {
    const serial = normalizeSerial(r.serial)
    if (!/^[0-9a-f]+$/.test(serial)) throw new JilError('SERIAL_INVALID', `revoked serial ${JSON.stringify(r.serial)} is not hex`, {status: 500})
    if (!seen.has(serial)) seen.set(serial, {...r, serial}) // the earliest revocation of a serial counts
  }
  // Every entry carries a reason code. @peculiar/x509 2.2 writes an entry with no extensions as an empty
  // crlEntryExtensions SEQUENCE (30 00), which RFC 5280 forbids (SIZE (1..MAX)); an explicit
  // `unspecified` (which the library itself would skip: it tests `if (entry.reason)` and that is 0)
  // is the lesser deviation (RFC 5280 only says it SHOULD be absent). OpenSSL accepts both.
  const entries: x509.X509CrlEntryParams[] = [...seen.values()].map((r) => ({
    serialNumber: r.serial,
    revocationDate: r.revokedAt,
    extensions: [reasonCode(x509.X509CrlReason[r.reason ?? 'unspecified'])],
  }))

  const crl = await x509.X509CrlGenerator.create({
    issuer: caCert.subjectName,
    thisUpdate: p.now,
    nextUpdate: new Date(p.now.getTime() + p.validForMs),
    signingAlgorithm: EC,
    signingKey,
    extensions: [aki, new x509.Extension(OID_CRL_NUMBER, false, derInteger(BigInt(p.number)))],
    entries,
  })
  const der = new Uint8Array(crl.rawData)
  return {
    der,
    pem: derToPem(der, 'X509 CRL'),
    number: p.number,
    thisUpdate: crl.thisUpdate,
    nextUpdate: crl.nextUpdate!,
  }
}

/** The CRL entry extension reasonCode (2.5.29.21): an ENUMERATED. */
function reasonCode(reason: x509.X509CrlReason): x509.Extension {
  return new x509.Extension(OID_REASON_CODE, false, new Uint8Array([0x0a, 0x01, reason]))
}

/** DER INTEGER of a non-negative integer (minimal two's complement). */
function derInteger(n: bigint): Uint8Array<ArrayBuffer> {
  let hex = n.toString(16)
  if (hex.length % 2) hex = '0' + hex
  let body = Buffer.from(hex, 'hex')
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body])
  if (body.length > 127) throw new Error('integer too long')
  return new Uint8Array([0x02, body.length, ...body])
}

