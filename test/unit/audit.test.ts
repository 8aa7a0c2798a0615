import {createHash} from 'node:crypto'

import {describe, expect, it} from 'vitest'

import {entryBody, entryHash, ZERO_HASH, type AuditDetails, type AuditEntry} from '../../src/shared/audit.js'
import {LedgerVerifier, verifyEntryInclusion, verifyExportLines, EXPORT_FORMAT} from '../../src/shared/audit-verify.js'
import {canonicalJson} from '../../src/shared/canonical.js'
import {leafHash, MerkleTree, verifyConsistency} from '../../src/shared/merkle.js'
import {chainOf, ORIGIN, signCheckpoint, testCheckpointKey} from '../helpers/audit.js'

const key = testCheckpointKey()
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

function verify(entries: AuditEntry[], checkpoints: ReturnType<typeof signCheckpoint>[], pinned = key.pinned) {
  const v = new LedgerVerifier(pinned, ORIGIN)
  for (const c of checkpoints) v.addCheckpoint(c)
  for (const e of entries) v.addEntry(e)
  return v.finish()
}

describe('the entry hash (DESIGN.md §7)', () => {
  it('is SHA-256 of prev_hash bytes and the RFC 8785 JSON of {seq, time, actor, action, subject, details}', () => {
    const e = {seq: 1, time: '2026-11-27T10:00:00.000Z', actor: {type: 'user' as const, id: 'ci-pipeline', role: 'ci-pipeline'}, action: 'image.push', subject: 'jil/wallet-api@sha256:ab', details: {version: 'v95.3', b: 1, a: 'x'}}
    const json = '{"action":"image.push","actor":{"id":"ci-pipeline","role":"ci-pipeline","type":"user"},"details":{"a":"x","b":1,"version":"v95.3"},"seq":1,"subject":"jil/wallet-api@sha256:ab","time":"2026-11-27T10:00:00.000Z"}'
    expect(canonicalJson(e)).toBe(json)
    const expected = createHash('sha256').update(Buffer.alloc(32)).update(json).digest('hex')
    expect(entryHash(ZERO_HASH, e).toString('hex')).toBe(expected)
  })

  it('expresses the seed\'s sample entries exactly', () => {
    const push: AuditDetails['image.push'] = {image: 'jil/settlement-api', digest: 'sha256:' + 'a'.repeat(64), version: 'v95.3', track: 'devnet', commit: '9f2c1e0', key_id: '0123456789abcdef'}
    const promote: AuditDetails['image.promote'] = {image: 'jil/settlement-api', digest: push.digest, version: 'v95.3', from: 'testnet', to: 'mainnet', approvals: 2, approvers: ['alice', 'bob']}
    const upgrade: AuditDetails['node.upgrade'] = {service: 'settlement-api', from_version: 'v95.2', to_version: 'v95.3', digest: push.digest, strategy: 'rolling', rollout_id: 'r-1'}
    const revoke: AuditDetails['cert.revoke'] = {serial: '4f1e', reason: 'key compromise', kind: 'node'}
    const records = [
      {actor: {type: 'user' as const, id: 'ci-pipeline', role: 'ci-pipeline'}, action: 'image.push', subject: `jil/settlement-api@${push.digest}`, details: push},
      {actor: {type: 'user' as const, id: 'alice', role: 'ops-lead'}, action: 'image.promote', subject: `jil/settlement-api@${push.digest}`, details: promote},
      {actor: {type: 'user' as const, id: 'alice', role: 'ops-lead'}, action: 'node.upgrade', subject: 'CH-ZUG-01', details: upgrade},
      {actor: {type: 'user' as const, id: 'sam', role: 'security-lead'}, action: 'cert.revoke', subject: 'SG-MAS-01', details: revoke},
    ]
    let prev: Uint8Array = ZERO_HASH
    const tree = new MerkleTree()
    const entries = records.map((r, i) => {
      const e = {...r, seq: i + 1, time: `2026-11-27T10:00:0${i}.000Z`, prev_hash: hex(prev), hash: ''}
      const h = entryHash(prev, e)
      e.hash = h.toString('hex')
      prev = h
      tree.append(leafHash(h))
      return e
    })
    // Round trip through JSON (the wire and the export) keeps every hash.
    const wire = JSON.parse(JSON.stringify(entries)) as AuditEntry[]
    const report = verify(wire, [signCheckpoint(key, 4, hex(tree.root()))])
    expect(report).toMatchObject({ok: true, entries: 4, checkpoints: 1})
    expect(wire[1]!.details).toMatchObject({approvals: 2})
    expect(wire[2]!.details).toMatchObject({from_version: 'v95.2', to_version: 'v95.3', strategy: 'rolling'})
    expect(wire[3]!.details).toMatchObject({reason: 'key compromise'})
  })
})

describe.each([1, 2, 3, 7, 8, 1000])('a ledger of %i entries', (n) => {
  const {entries, tree} = chainOf(n)
  const sizes = [...new Set([1, Math.ceil(n / 2), n])]
  const checkpoints = sizes.map((s) => signCheckpoint(key, s, hex(tree.root(s))))

  it('verifies: chain, every checkpoint root and signature', () => {
    const r = verify(entries, checkpoints)
    expect(r).toMatchObject({ok: true, entries: n, checkpoints: sizes.length, tree_size: n, root_hash: hex(tree.root())})
  })

  it('proves every entry (or a sample) included in every checkpoint that covers it, and checkpoints consistent', () => {
    const step = n > 50 ? 37 : 1
    for (const c of checkpoints) {
      for (let seq = 1; seq <= c.tree_size; seq += step) {
        const e = entries[seq - 1]!
        expect(verifyEntryInclusion(e, tree.inclusionProof(seq - 1, c.tree_size).map(hex), c)).toBe(true)
      }
      const older = checkpoints[0]!
      expect(verifyConsistency(older.tree_size, c.tree_size, tree.root(older.tree_size), tree.root(c.tree_size), tree.consistencyProof(older.tree_size, c.tree_size))).toBe(true)
    }
    if (n > 1) {
      const e = {...entries[0]!, details: {forged: true}}
      expect(verifyEntryInclusion(e, tree.inclusionProof(0, n).map(hex), checkpoints.at(-1)!)).toBe(false)
    }
  })

  it('names the first bad seq when an entry is edited in place', () => {
    const k = Math.ceil(n / 2)
    const edited = entries.map((e) => (e.seq === k ? {...e, details: {...e.details, n: -1}} : e))
    expect(verify(edited, checkpoints).problem).toMatchObject({code: 'ENTRY_HASH_MISMATCH', seq: k})
  })

  it('names the first missing seq when an entry is deleted, and notices a cut-off tail', () => {
    if (n >= 3) {
      const k = 2
      expect(verify(entries.filter((e) => e.seq !== k), checkpoints).problem).toMatchObject({code: 'ENTRY_MISSING', seq: k})
    }
    expect(verify(entries.slice(0, n - 1), checkpoints).problem).toMatchObject({code: n === 1 ? 'CHECKPOINT_BEYOND_LOG' : 'CHECKPOINT_BEYOND_LOG', seq: n})
  })

  it('says "at or before" when the log was re-hashed after an edit', () => {
    const k = Math.max(1, Math.ceil(n / 2))
    const rehashed = chainOf(n, (e) => {
      if (e.seq === k) e.details = {...e.details, n: -1}
    }).entries
    const problem = verify(rehashed, checkpoints).problem
    const covering = sizes.find((s) => s >= k)!
    const before = [0, ...sizes].filter((s) => s < k).at(-1)!
    expect(problem).toMatchObject({code: 'CHECKPOINT_ROOT_MISMATCH', after_seq: before, at_or_before_seq: covering})
  })

  it('refuses a forged checkpoint signature and a checkpoint by another key', () => {
    const forged = {...checkpoints.at(-1)!, root_hash: 'f'.repeat(64)}
    expect(verify(entries, [forged]).problem).toMatchObject({code: 'CHECKPOINT_SIGNATURE_INVALID'})
    const other = testCheckpointKey()
    expect(verify(entries, [signCheckpoint(other, n, hex(tree.root()))]).problem).toMatchObject({code: 'CHECKPOINT_KEY_MISMATCH'})
  })
})

describe('export files', () => {
  it('verifies an NDJSON export and refuses a malformed one', async () => {
    const {entries, tree} = chainOf(5)
    const lines = [
      JSON.stringify({type: 'header', format: EXPORT_FORMAT, origin: ORIGIN}),
      JSON.stringify({type: 'checkpoint', ...signCheckpoint(key, 5, hex(tree.root()))}),
      ...entries.map((e) => JSON.stringify({type: 'entry', ...e})),
    ]
    async function* gen(ls: string[]) {
      yield* ls
    }
    expect(await verifyExportLines(gen(lines), key.pinned)).toMatchObject({ok: true, entries: 5, checkpoints: 1})
    await expect(verifyExportLines(gen(['garbage']), key.pinned)).rejects.toMatchObject({code: 'AUDIT_EXPORT_INVALID'})
    await expect(verifyExportLines(gen([]), key.pinned)).rejects.toMatchObject({code: 'AUDIT_EXPORT_INVALID'})
    await expect(verifyExportLines(gen([lines[0]!, '{"type":"other"}']), key.pinned)).rejects.toMatchObject({code: 'AUDIT_EXPORT_INVALID'})
    // A log with entries but no checkpoint is not tied to HQ's key.
    expect((await verifyExportLines(gen([lines[0]!, ...lines.slice(2)]), key.pinned)).problem).toMatchObject({code: 'NO_CHECKPOINT'})
    // A checkpoint of another HQ's log.
    const foreign = {...signCheckpoint(key, 5, hex(tree.root())), origin: 'jil-audit/sha256:other'}
    expect(verify(entries, [foreign]).problem).toMatchObject({code: 'CHECKPOINT_ORIGIN_MISMATCH'})
  })
})

describe('canonical JSON', () => {
  it('takes the fast path to exactly the reference implementation\'s bytes', async () => {
    const {default: reference} = await import('canonicalize')
    const corpus: unknown[] = [
      null, true, false, 0, -0, 1, -1.5, 1e21, 1e-7, 123456789012345680000, 0.1 + 0.2, Number.MAX_SAFE_INTEGER, 5e-324,
      '', 'plain', 'é ☃ 𝄞', '"quotes" and \\ backslash', '\u0000\u001f\u007f\u2028', 'emoji 😀',
      [], [1, [2, [3]]], {}, {b: 1, a: 2, A: 3, '': 4, é: 5, '\u20ac': 6, '\ud83d\ude00': 7, '10': 8, '9': 9},
      {details: {nested: {z: [1, {y: null, x: 'x'}], a: true}}, seq: 12},
    ]
    for (const v of corpus) expect(canonicalJson(v), JSON.stringify(v)).toBe(reference(v))
    expect(() => canonicalJson({s: 'lone \ud800 surrogate'})).toThrow(expect.objectContaining({code: 'NOT_CANONICALIZABLE'}))
    expect(() => canonicalJson({n: Number.NaN})).toThrow(expect.objectContaining({code: 'NOT_CANONICALIZABLE'}))
    // Not plain data: the reference handles it (Date → its toJSON string).
    expect(canonicalJson({t: new Date('2026-11-27T00:00:00Z')})).toBe('{"t":"2026-11-27T00:00:00.000Z"}')
  })

  it('hashes an entry over entryBody() exactly', () => {
    const {entries} = chainOf(3)
    for (const e of entries) {
      const prev = Buffer.from(e.prev_hash, 'hex')
      expect(entryHash(prev, e).toString('hex')).toBe(createHash('sha256').update(prev).update(entryBody(e)).digest('hex'))
    }
  })
})
