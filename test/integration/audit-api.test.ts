import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {exportToFile, pinnedCheckpointKey, proveEntry, verifyFromFile, verifyFromHq} from '../../src/cli/audit.js'
import {hqPath} from '../../src/hq/datadir.js'
import {checkpointKeyFromPem} from '../../src/shared/audit-verify.js'
import {writeBundle} from '../../src/shared/bundle.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {startTestHq, tempDir} from '../helpers/hq.js'

describe('the audit API and the CLI side of verification', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let client: HqClient
  let tmp: Awaited<ReturnType<typeof tempDir>>

  beforeAll(async () => {
    t = await startTestHq()
    tmp = await tempDir()
    client = await HqClient.connect(t.hq.url, t.admin)
    const {ledger, db} = t.hq
    const ids: number[] = []
    for (let i = 0; i < 30; i++) {
      const who = i % 2 ? {type: 'user' as const, id: 'ci-pipeline', role: 'ci-pipeline'} : {type: 'user' as const, id: 'alice', role: 'security-lead'}
      ids.push(await db.transaction((tx) => ledger.append(tx, {actor: who, action: i % 2 ? 'image.push' : 'cert.revoke', subject: `subject-${i % 5}`, details: {i}})))
    }
    await ledger.seqOf(ids.at(-1)!)
  })
  afterAll(async () => {
    await client?.close()
    await t?.stop()
    await tmp?.cleanup()
  })

  it('starts with the genesis entry hq init wrote', async () => {
    const page = await client.auditPage({limit: 1})
    expect(page.entries[0]).toMatchObject({seq: 1, action: 'hq.init', actor: {type: 'hq', id: 'hq'}, subject: t.init.ca_fingerprint, prev_hash: '0'.repeat(64)})
  })

  it('pages GET /v1/fleet/audit with filters, both ways', async () => {
    const pushes = await client.auditPage({action: 'image.push', limit: 100})
    expect(pushes.entries).toHaveLength(15)
    expect(pushes.entries.every((e) => e.actor.id === 'ci-pipeline')).toBe(true)
    const byActor = await client.auditPage({actor: 'alice', subject: 'subject-0', limit: 100})
    expect(byActor.entries.map((e) => e.details.i)).toEqual([0, 10, 20])
    const first = await client.auditPage({limit: 10})
    expect(first.entries.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(first.next).toEqual({after: 10})
    const newest = await client.auditPage({order: 'desc', limit: 5})
    expect(newest.entries.map((e) => e.seq)).toEqual([31, 30, 29, 28, 27])
    expect(newest.next).toEqual({before: 27})
    const last = await client.auditPage({after: 29, limit: 5})
    expect(last.entries.map((e) => e.seq)).toEqual([30, 31])
    expect(last.next).toBeNull()
    const future = await client.auditPage({since: '2999-01-01T00:00:00Z'})
    expect(future.entries).toEqual([])
    await expect(client.auditPage({limit: 5000})).rejects.toMatchObject({code: 'INVALID_QUERYSTRING', status: 400})
    await expect(client.auditPage({since: 'yesterday'})).rejects.toMatchObject({status: 400})
    await expect(client.auditPage({bogus: 1})).rejects.toMatchObject({status: 400})
  })

  it('signs a checkpoint on demand and proves an entry against it, checked locally', async () => {
    const pinned = checkpointKeyFromPem(t.admin.checkpoint_key!)
    const c = await client.signCheckpoint()
    expect(c.tree_size).toBe(31)
    const proof = await proveEntry(client, 17, pinned)
    expect(proof).toMatchObject({seq: 17, tree_size: 31, leaf_index: 16, verified: true})
    expect(proof.proof.length).toBeGreaterThan(0)
    const cons = await client.consistencyProof(1, 31)
    expect(cons.proof.length).toBeGreaterThan(0)
    await expect(client.inclusionProof(99, 31)).rejects.toMatchObject({code: 'AUDIT_SEQ_INVALID', status: 404})
    await expect(client.consistencyProof(5, 3)).rejects.toMatchObject({code: 'AUDIT_SIZE_INVALID', status: 400})
    // A key that is not HQ's refuses HQ's checkpoint.
    const {testCheckpointKey} = await import('../helpers/audit.js')
    await expect(proveEntry(client, 17, testCheckpointKey().pinned)).rejects.toMatchObject({code: 'AUDIT_TAMPERED'})
  })

  it('verifies the whole ledger from HQ and from an export file with only the checkpoint key', async () => {
    const pinned = checkpointKeyFromPem(await readFile(hqPath(t.dataDir, 'checkpointPub'), 'utf8'))
    const live = await verifyFromHq(client, pinned)
    expect(live).toMatchObject({ok: true, entries: 31, tree_size: 31})
    expect(live.checkpoints).toBeGreaterThanOrEqual(2)
    const file = join(tmp.dir, 'audit.ndjson')
    const exported = await exportToFile(client, file)
    expect(exported).toMatchObject({file, entries: 31})
    expect(await verifyFromFile(file, pinned)).toMatchObject({ok: true, entries: 31, root_hash: live.root_hash})
    // Edit one entry in the file: named.
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n')
    const i = lines.findIndex((l) => l.includes('"seq":12,'))
    lines[i] = lines[i]!.replace(/"i":(\d+)/, (_m, d: string) => `"i":${Number(d) + 1000}`)
    await writeFile(join(tmp.dir, 'edited.ndjson'), lines.join('\n') + '\n')
    expect((await verifyFromFile(join(tmp.dir, 'edited.ndjson'), pinned)).problem).toMatchObject({code: 'ENTRY_HASH_MISMATCH', seq: 12})
    await expect(verifyFromFile(join(tmp.dir, 'missing.ndjson'), pinned)).rejects.toMatchObject({code: 'FILE_MISSING'})
  })

  it('pins the checkpoint key from the bundle, or refuses without one', async () => {
    const withKey = join(tmp.dir, 'with.json')
    await writeBundle(withKey, t.admin)
    expect((await pinnedCheckpointKey(undefined, withKey)).keyId).toBe(t.init.checkpoint_key_id)
    const without = join(tmp.dir, 'without.json')
    const {checkpoint_key: _drop, ...rest} = t.admin
    await writeBundle(without, rest)
    await expect(pinnedCheckpointKey(undefined, without)).rejects.toMatchObject({code: 'NO_CHECKPOINT_KEY'})
  })
})
