import 'reflect-metadata'

import {createPublicKey, webcrypto} from 'node:crypto'

import * as x509 from '@peculiar/x509'

import {JilError} from './errors.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

/**
 * ECDSA P-256 keys and certificate signing requests, in one place: the requester (a node, a user's
 * CLI) makes its own key and sends only a CSR, so a private key never leaves the machine that uses
 * it; HQ parses and checks CSRs; the CA imports its signing key here too.
 */
export const EC_P256: EcKeyGenParams & EcdsaParams = {name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256'}

export type P256Key = {keys: CryptoKeyPair; keyPem: string}

export async function generateP256Key(): Promise<P256Key> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as unknown as CryptoKeyPair
  const der = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey as unknown as webcrypto.CryptoKey)
  return {keys, keyPem: x509.PemConverter.encode(der, 'PRIVATE KEY')}
}

type KeyError = {what: string; hint: string}

/** A PKCS#8 P-256 private key for signing (the CA's). */
export async function importP256SigningKey(pem: string, e: KeyError): Promise<CryptoKey> {
  try {
    const der = x509.PemConverter.decode(pem)[0]
    if (!der) throw new Error('no PEM block')
    return (await webcrypto.subtle.importKey('pkcs8', der, EC_P256, false, ['sign'])) as unknown as CryptoKey
  } catch (err) {
    throw new JilError('KEY_INVALID', `the ${e.what} is not a PKCS#8 ECDSA P-256 private key`, {hint: e.hint, status: 500, cause: err})
  }
}

/** A PKCS#8 P-256 key file as a key pair (the public half derived from it, so the file holds one thing). */
export async function importP256Key(pem: string, e: KeyError): Promise<CryptoKeyPair> {
  try {
    const spki = createPublicKey(pem).export({type: 'spki', format: 'der'})
    const privateKey = await importP256SigningKey(pem, e)
    const publicKey = (await webcrypto.subtle.importKey('spki', spki, EC_P256, true, ['verify'])) as unknown as CryptoKey
    return {privateKey, publicKey}
  } catch (err) {
    if (err instanceof JilError) throw err
    throw new JilError('KEY_INVALID', `the ${e.what} is not a PKCS#8 ECDSA P-256 private key`, {hint: e.hint, cause: err})
  }
}

/** A PKCS#10 request: CN and one SAN URI (jil://user/NAME or jil://node/ID), signed by the key. */
export async function createCsr(commonName: string, sanUri: string, keys: CryptoKeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{CN: [commonName]}],
    keys,
    signingAlgorithm: EC_P256,
    extensions: [new x509.SubjectAlternativeNameExtension([{type: 'url', value: sanUri}])],
  })
  return csr.toString('pem') + '\n'
}

export async function newKeyAndCsr(commonName: string, sanUri: string): Promise<{keyPem: string; csrPem: string}> {
  const {keys, keyPem} = await generateP256Key()
  return {keyPem, csrPem: await createCsr(commonName, sanUri, keys)}
}

export type ParsedCsr = {commonName: string | undefined; sanUris: string[]; publicKey: x509.PublicKey}

/** Parses a CSR and checks its self-signature (the requester holds the key) and that the key is P-256. */
export async function parseCsr(pem: string): Promise<ParsedCsr> {
  let csr: x509.Pkcs10CertificateRequest
  try {
    csr = new x509.Pkcs10CertificateRequest(pem)
  } catch {
    throw new JilError('CSR_INVALID', 'the certificate signing request cannot be parsed', {status: 400, hint: 'send a PKCS#10 CSR in PEM'})
  }
  // The key type first: WebCrypto throws on curves it does not know (secp256k1, Ed448…).
  let alg: EcKeyAlgorithm
  try {
    alg = csr.publicKey.algorithm as EcKeyAlgorithm
  } catch {
    throw new JilError('CSR_INVALID', 'the CSR key is of an unsupported type, not ECDSA P-256', {status: 400, hint: 'use an ECDSA P-256 key'})
  }
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') {
    throw new JilError('CSR_INVALID', `the CSR key is ${alg.name}${alg.namedCurve ? ' ' + alg.namedCurve : ''}, not ECDSA P-256`, {status: 400, hint: 'use an ECDSA P-256 key'})
  }
  let signed = false
  try {
    signed = await csr.verify()
  } catch {
    signed = false
  }
  if (!signed) {
    throw new JilError('CSR_INVALID', 'the CSR is not signed by the key it carries', {status: 400, hint: 'make the CSR with the key the certificate is for'})
  }
  const san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension)
  const sanUris = san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : []
  return {commonName: csr.subjectName.getField('CN')[0], sanUris, publicKey: csr.publicKey}
}
