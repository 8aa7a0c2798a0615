import 'reflect-metadata'

import {webcrypto} from 'node:crypto'

import * as x509 from '@peculiar/x509'

import {JilError} from './errors.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const EC: EcKeyGenParams & EcdsaParams = {name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256'}

/**
 * Certificate signing requests: the requester makes its own P-256 key and sends only a CSR, so a
 * private key never leaves the machine that uses it (a node's, a user's CLI).
 */
export async function newKeyAndCsr(commonName: string, sanUri: string): Promise<{keyPem: string; csrPem: string}> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as unknown as CryptoKeyPair
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{CN: [commonName]}],
    keys,
    signingAlgorithm: EC,
    extensions: [new x509.SubjectAlternativeNameExtension([{type: 'url', value: sanUri}])],
  })
  const der = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey as unknown as webcrypto.CryptoKey)
  return {keyPem: x509.PemConverter.encode(der, 'PRIVATE KEY'), csrPem: csr.toString('pem') + '\n'}
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
  if (!(await csr.verify())) {
    throw new JilError('CSR_INVALID', 'the CSR is not signed by the key it carries', {status: 400, hint: 'make the CSR with the key the certificate is for'})
  }
  const alg = csr.publicKey.algorithm as EcKeyAlgorithm
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') {
    throw new JilError('CSR_INVALID', `the CSR key is ${alg.name}${alg.namedCurve ? ' ' + alg.namedCurve : ''}, not ECDSA P-256`, {status: 400, hint: 'use an ECDSA P-256 key'})
  }
  const san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension)
  const sanUris = san ? san.names.items.filter((n) => n.type === 'url').map((n) => n.value) : []
  return {commonName: csr.subjectName.getField('CN')[0], sanUris, publicKey: csr.publicKey}
}
