import {generateKeyPairSync, sign} from 'node:crypto'

import {auditOrigin, checkpointMessage, entryHash, ZERO_HASH, type AuditActor, type AuditEntry, type Checkpoint} from '../../src/shared/audit.js'
import {checkpointKeyFromPem, type CheckpointKey} from '../../src/shared/audit-verify.js'
import {leafHash, MerkleTree} from '../../src/shared/merkle.js'
import {keyIdOf, parseEd25519PublicPem} from '../../src/shared/signing.js'

export type TestKey = {pinned: CheckpointKey; privatePem: string; publicPem: string; keyId: string}

export function testCheckpointKey(): TestKey {
  const {privateKey, publicKey} = generateKeyPairSync('ed25519')
  const publicPem = publicKey.export({type: 'spki', format: 'pem'}) as string
  return {pinned: checkpointKeyFromPem(publicPem), privatePem: privateKey.export({type: 'pkcs8', format: 'pem'}) as string, publicPem, keyId: keyIdOf(parseEd25519PublicPem(publicPem))}
}

export const ORIGIN = auditOrigin('sha256:' + '0'.repeat(64))

export function signCheckpoint(key: TestKey, treeSize: number, rootHex: string, time = '2026-11-27T12:00:00.000Z'): Checkpoint {
  const body = {origin: ORIGIN, tree_size: treeSize, root_hash: rootHex, time}
  return {...body, key_id: key.keyId, signature: sign(null, checkpointMessage(body), key.privatePem).toString('base64')}
}

const ACTORS: AuditActor[] = [
  {type: 'user', id: 'ci-pipeline', role: 'ci-pipeline'},
  {type: 'user', id: 'alice', role: 'security-lead'},
  {type: 'node', id: 'CH-ZUG-01'},
]

/** A valid chain of n entries (re-hashed from `from` on when entries are edited), with its tree. */
export function chainOf(n: number, edit?: (e: AuditEntry) => void): {entries: AuditEntry[]; tree: MerkleTree} {
  const entries: AuditEntry[] = []
  const tree = new MerkleTree()
  let prev: Uint8Array = ZERO_HASH
  for (let seq = 1; seq <= n; seq++) {
    const e: AuditEntry = {
      seq,
      time: new Date(Date.UTC(2026, 10, 27, 12, 0, seq)).toISOString(),
      actor: ACTORS[seq % ACTORS.length]!,
      action: 'node.command',
      subject: `node-${seq % 7}`,
      details: {n: seq, note: seq % 3 === 0 ? 'é ☃ "quoted"' : 'plain', nested: {b: 2, a: [1, 2.5, null, true]}},
      prev_hash: Buffer.from(prev).toString('hex'),
      hash: '',
    }
    edit?.(e)
    const h = entryHash(prev, e)
    e.hash = h.toString('hex')
    prev = h
    tree.append(leafHash(h))
    entries.push(e)
  }
  return {entries, tree}
}
