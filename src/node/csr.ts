import {createCsr, generateP256Key, importP256Key, type P256Key} from '../shared/csr.js'
import {identityUri} from '../shared/pki.js'

/** The node's key pair in both forms: webcrypto keys to sign the CSR, PKCS#8 PEM for node.key. */
export type NodeKey = P256Key

/** A fresh ECDSA P-256 key for the node (DESIGN.md §4: keys never leave the node). */
export const generateNodeKey = generateP256Key

export function importNodeKey(keyPem: string): Promise<CryptoKeyPair> {
  return importP256Key(keyPem, {what: 'node key', hint: 'recreate the node identity with jil node init --force, then join again with a new token'})
}

/** The node's CSR: CN = node id, SAN URI jil://node/<id>; HQ sets the rest (O = zone, lifetime). */
export function createNodeCsr(nodeId: string, keys: CryptoKeyPair): Promise<string> {
  return createCsr(nodeId, identityUri({kind: 'node', id: nodeId}), keys)
}
