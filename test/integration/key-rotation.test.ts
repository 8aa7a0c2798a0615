import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {addUserOnline} from '../../src/cli/identity.js'
import {readBundle} from '../../src/shared/bundle.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {approvalPayload, verifyManifest, type ImageManifest} from '../../src/shared/manifest.js'
import {extendTrust, type ServedKey} from '../../src/shared/signing-keys.js'
import {generateEd25519Key} from '../../src/shared/signing.js'
import {signAsUser} from '../../src/shared/user-signature.js'
import {startTestHq, tempDir} from '../helpers/hq.js'

const IMAGE = process.env.JIL_TEST_IMAGE

describe.runIf(IMAGE)('image-signing key rotation', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let admin: HqClient
  let ops: HqClient
  let opsBundle: Awaited<ReturnType<typeof readBundle>>

  beforeAll(async () => {
    t = await startTestHq()
    tmp = await tempDir()
    admin = await HqClient.connect(t.hq.url, t.admin)
    opsBundle = await readBundle((await addUserOnline(admin, t.admin, 'olga', 'ops-lead', join(tmp.dir, 'olga.json'))).bundle)
    ops = await HqClient.connect(t.hq.url, opsBundle)
  })
  afterAll(async () => {
    await admin?.close()
    await ops?.close()
    await t?.stop()
    await tmp?.cleanup()
  })

  it('endorses the new key with the old one; nodes extend trust along the chain; old manifests verify until retirement', async () => {
    const pinnedAtJoin = (await admin.request<{keys: ServedKey[]}>('GET', '/v1/keys')).keys
    expect(pinnedAtJoin.map((k) => k.key_id)).toEqual([t.init.signing_key_id])
    const devnet = await admin.request<ImageManifest>('POST', '/v1/images', {image: IMAGE, version: 'v2.0', commit: 'abcdef0'})
    expect(devnet.key_id).toBe(t.init.signing_key_id)

    await expect(ops.request('POST', '/v1/keys/rotate', {})).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    const next = await admin.request<ServedKey>('POST', '/v1/keys/rotate', {})
    expect(next.endorsement).toMatchObject({signed_by: t.init.signing_key_id, key_id: next.key_id})

    // Promotion now signs with the new key.
    await ops.request('POST', `/v1/images/${devnet.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(devnet, 'testnet'), opsBundle)})
    const testnet = await ops.request<ImageManifest>('POST', `/v1/images/${devnet.digest}/promote`, {to: 'testnet'})
    expect(testnet.key_id).toBe(next.key_id)

    const served = (await admin.request<{current: string; keys: ServedKey[]}>('GET', '/v1/keys')).keys
    const trust = (keys: {key_id: string; public_key: string; retired_at?: string}[]) => ({keys, caPem: t.admin.ca, isRevoked: () => false})
    // Pinned only the old key: the new one is unknown until the chain is followed.
    expect(verifyManifest(testnet, trust(pinnedAtJoin), {track: 'testnet', minApprovals: 1})).toMatchObject({ok: false, code: 'UNKNOWN_KEY'})
    const extended = extendTrust(pinnedAtJoin, served)
    expect(extended.map((k) => k.key_id).sort()).toEqual([t.init.signing_key_id, next.key_id].sort())
    expect(verifyManifest(testnet, trust(extended), {track: 'testnet', minApprovals: 1})).toMatchObject({ok: true})

    // A key endorsed by a key nobody pinned is not taken.
    const rogue = await generateEd25519Key()
    const forged: ServedKey = {key_id: rogue.keyId, public_key: rogue.publicPem, created_at: new Date().toISOString(), endorsement: {key_id: rogue.keyId, public_key: rogue.publicPem, created_at: new Date().toISOString(), signed_by: 'ffffffffffffffff', signature: 'AAAA'}}
    expect(extendTrust(pinnedAtJoin, [...served, forged]).map((k) => k.key_id)).not.toContain(rogue.keyId)

    // Retiring the old key: what it signed before stays valid.
    await expect(admin.request('POST', `/v1/keys/${next.key_id}/retire`, {})).rejects.toMatchObject({code: 'KEY_CURRENT'})
    await admin.request('POST', `/v1/keys/${t.init.signing_key_id}/retire`, {})
    const afterRetire = extendTrust(pinnedAtJoin, (await admin.request<{keys: ServedKey[]}>('GET', '/v1/keys')).keys)
    expect(afterRetire.find((k) => k.key_id === t.init.signing_key_id)?.retired_at).toBeDefined()
    expect(verifyManifest(devnet, trust(afterRetire), {track: 'devnet', minApprovals: 0})).toMatchObject({ok: true})
    // The audit ledger holds both steps.
    for (const action of ['key.rotate', 'key.retire']) {
      let n = 0
      for (let i = 0; i < 50 && n === 0; i++) {
        n = (await admin.auditPage({action})).entries.length
        if (n === 0) await new Promise((r) => setTimeout(r, 100))
      }
      expect(n, action).toBe(1)
    }
  })
})
