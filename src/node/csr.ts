import 'reflect-metadata'

import {createPublicKey, webcrypto} from 'node:crypto'

import * as x509 from '@peculiar/x509'

import {JilError} from '../shared/errors.js'
import {identityUri} from '../shared/pki.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const EC: EcKeyGenParams & EcdsaParams = {name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256'}

/** The node's key pair in both forms: webcrypto keys to sign the CSR, PKCS#8 PEM for node.key. */
export type NodeKey = {keys: CryptoKeyPair; keyPem: string}

/** A fresh ECDSA P-256 key for the node (DESIGN.md §4: keys never leave the node). */
export async function generateNodeKey(): Promise<NodeKey> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as unknown as CryptoKeyPair
  const der = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey as unknown as webcrypto.CryptoKey)
  return {keys, keyPem: x509.PemConverter.encode(der, 'PRIVATE KEY')}
}

/** Imports node.key (PKCS#8 P-256); the public half is derived from it, so the file holds one thing. */
export async function importNodeKey(keyPem: string): Promise<CryptoKeyPair> {
  try {
    const der = x509.PemConverter.decode(keyPem)[0]
    if (!der) throw new Error('no PEM block')
    const spki = createPublicKey(keyPem).export({type: 'spki', format: 'der'})
    const privateKey = (await webcrypto.subtle.importKey('pkcs8', der, EC, false, ['sign'])) as unknown as CryptoKey
    const publicKey = (await webcrypto.subtle.importKey('spki', spki, EC, true, ['verify'])) as unknown as CryptoKey
    return {privateKey, publicKey}
  } catch (err) {
    throw new JilError('KEY_INVALID', 'the node key is not a PKCS#8 ECDSA P-256 private key', {
      hint: 'recreate the node identity with jil node init --force, then join again with a new token',
      cause: err,
    })
  }
}

/**
 * A PKCS#10 request for the node's certificate: CN = node id, SAN URI jil://node/<id>, signed by
 * the node key (which proves HQ that the requester holds it). HQ sets the rest (O = zone, lifetime).
 */
export async function createNodeCsr(nodeId: string, keys: CryptoKeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{CN: [nodeId]}],
    keys,
    signingAlgorithm: EC,
    extensions: [new x509.SubjectAlternativeNameExtension([{type: 'url', value: identityUri({kind: 'node', id: nodeId})}])],
  })
  return csr.toString('pem') + '\n'
}
