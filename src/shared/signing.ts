import {createHash} from 'node:crypto'

import * as ed from '@noble/ed25519'

import {JilError} from './errors.js'
import {derToPem, pemToDer} from './pki.js'

/** A Signer signs bytes with an Ed25519 key; the key file and (later) an HSM are two Signers. */
export interface Signer {
  readonly keyId: string
  readonly publicKey: Uint8Array
  sign(message: Uint8Array): Promise<Uint8Array>
}

// PKCS#8 and SPKI wrappers of a raw Ed25519 key (RFC 8410): fixed prefixes before the 32 key bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** Key id = first 16 hex of sha256(raw public key) (DESIGN.md §4). */
export function keyIdOf(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex').slice(0, 16)
}

export type Ed25519KeyPem = {privatePem: string; publicPem: string; keyId: string}

/** A new Ed25519 key as PKCS#8/SPKI PEM, readable by node:crypto and OpenSSL alike. */
export async function generateEd25519Key(): Promise<Ed25519KeyPem> {
  const seed = ed.utils.randomSecretKey()
  const pub = await ed.getPublicKeyAsync(seed)
  return {
    privatePem: derToPem(Buffer.concat([PKCS8_PREFIX, seed]), 'PRIVATE KEY'),
    publicPem: ed25519PublicPem(pub),
    keyId: keyIdOf(pub),
  }
}

export function ed25519PublicPem(pub: Uint8Array): string {
  return derToPem(Buffer.concat([SPKI_PREFIX, pub]), 'PUBLIC KEY')
}

export function parseEd25519PublicPem(pem: string): Uint8Array {
  const der = pemToDer(pem, 'PUBLIC KEY')
  if (der.length !== 44 || !der.subarray(0, 12).equals(SPKI_PREFIX)) {
    throw new JilError('KEY_INVALID', 'not an Ed25519 public key', {hint: 'expected an SPKI PEM of an Ed25519 key'})
  }
  return new Uint8Array(der.subarray(12))
}

/** A Signer over a PKCS#8 PEM key file's contents. */
export async function fileSigner(privatePem: string): Promise<Signer> {
  let der: Buffer
  try {
    der = pemToDer(privatePem, 'PRIVATE KEY')
  } catch (err) {
    throw new JilError('KEY_INVALID', 'the signing key is not a PEM private key', {hint: 'restore signing.key from a backup of the HQ data dir', cause: err})
  }
  if (der.length !== 48 || !der.subarray(0, 16).equals(PKCS8_PREFIX)) {
    throw new JilError('KEY_INVALID', 'the signing key is not an Ed25519 PKCS#8 key', {hint: 'restore signing.key from a backup of the HQ data dir'})
  }
  const seed = new Uint8Array(der.subarray(16))
  const publicKey = await ed.getPublicKeyAsync(seed)
  return {
    keyId: keyIdOf(publicKey),
    publicKey,
    sign: (message) => ed.signAsync(message, seed),
  }
}

/** Verifies by RFC 8032 rules (not ZIP-215), so noble and OpenSSL accept exactly the same signatures. */
export function verifyEd25519(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): Promise<boolean> {
  return ed.verifyAsync(signature, message, publicKey, {zip215: false})
}
