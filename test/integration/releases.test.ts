import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {addUserOnline} from '../../src/cli/identity.js'
import {readBundle, type UserBundle} from '../../src/shared/bundle.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {approvalPayload, verifyManifest, type ImageManifest} from '../../src/shared/manifest.js'
import {signAsUser} from '../../src/shared/user-signature.js'
import {startTestHq, tempDir} from '../helpers/hq.js'

const IMAGE = process.env.JIL_TEST_IMAGE
const DIGEST = process.env.JIL_TEST_IMAGE_DIGEST
if (!IMAGE && process.env.CI) throw new Error('JIL_TEST_IMAGE is not set: run `eval "$(scripts/test-services.sh env)"` first')

describe.runIf(IMAGE)('signed releases against the real registry', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  const users: Record<string, {bundle: UserBundle; client: HqClient}> = {}
  let manifest: ImageManifest

  beforeAll(async () => {
    t = await startTestHq({registry: IMAGE!.split('/')[0]})
    tmp = await tempDir()
    const admin = await HqClient.connect(t.hq.url, t.admin)
    for (const [name, role] of [['ci-pipeline', 'ci-pipeline'], ['olga', 'ops-lead'], ['otto', 'ops-lead'], ['sam', 'security-lead'], ['vera', 'viewer']] as const) {
      const r = await addUserOnline(admin, t.admin, name, role, join(tmp.dir, `${name}.json`))
      const bundle = await readBundle(r.bundle)
      users[name] = {bundle, client: await HqClient.connect(t.hq.url, bundle)}
    }
    await admin.close()
  })
  afterAll(async () => {
    for (const u of Object.values(users)) await u.client.close()
    await t?.stop()
    await tmp?.cleanup()
  })

  const approve = (who: string, track: 'testnet' | 'mainnet', m = manifest) =>
    users[who]!.client.request('POST', `/v1/images/${m.digest}/approvals`, {track, approval: signAsUser(approvalPayload(m, track), users[who]!.bundle)})
  const promote = (who: string, to: 'testnet' | 'mainnet') => users[who]!.client.request<ImageManifest>('POST', `/v1/images/${manifest.digest}/promote`, {to})

  it('signs by tag the digest the registry reports, onto devnet; only images:sign may', async () => {
    await expect(users.vera!.client.request('POST', '/v1/images', {image: IMAGE, version: 'v1.0', commit: 'abcdef0'})).rejects.toMatchObject({code: 'FORBIDDEN', status: 403})
    manifest = await users['ci-pipeline']!.client.request<ImageManifest>('POST', '/v1/images', {image: IMAGE, version: 'v1.0', commit: 'abcdef0'})
    expect(manifest).toMatchObject({digest: DIGEST, track: 'devnet', version: 'v1.0', key_id: t.init.signing_key_id, approvals: []})
    await expect(users['ci-pipeline']!.client.request('POST', '/v1/images', {image: IMAGE, version: 'v1.0', commit: 'abcdef0'})).rejects.toMatchObject({code: 'MANIFEST_EXISTS'})
    await expect(users['ci-pipeline']!.client.request('POST', '/v1/images', {image: IMAGE!.replace(/:[^:/]+$/, ':nope'), version: 'v1.1', commit: 'abcdef0'})).rejects.toMatchObject({code: 'IMAGE_NOT_FOUND'})
    await expect(users['ci-pipeline']!.client.request('POST', '/v1/images', {image: IMAGE, version: 'latest', commit: 'abcdef0'})).rejects.toMatchObject({code: 'VERSION_INVALID'})
  })

  it('refuses promotions without enough approvals, the pusher\'s approval and double approvals', async () => {
    await expect(promote('olga', 'testnet')).rejects.toMatchObject({code: 'INSUFFICIENT_APPROVALS'})
    await expect(promote('olga', 'mainnet')).rejects.toMatchObject({code: 'NOT_ON_TRACK'})
    await expect(approve('vera', 'testnet')).rejects.toMatchObject({status: 403})
    // The pusher (ci-pipeline) may not approve — and a ci-pipeline cert is no approver role either.
    await expect(users['ci-pipeline']!.client.request('POST', `/v1/images/${manifest.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(manifest, 'testnet'), users['ci-pipeline']!.bundle)})).rejects.toMatchObject({status: 403})
    // Someone else's signature submitted by olga.
    await expect(users.olga!.client.request('POST', `/v1/images/${manifest.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(manifest, 'testnet'), users.otto!.bundle)})).rejects.toMatchObject({code: 'APPROVAL_NOT_YOURS'})
    // An approval for another track.
    await expect(users.olga!.client.request('POST', `/v1/images/${manifest.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(manifest, 'mainnet'), users.olga!.bundle)})).rejects.toMatchObject({code: 'APPROVAL_MISMATCH'})
    expect(await approve('olga', 'testnet')).toMatchObject({approvers: ['olga']})
    await expect(approve('olga', 'testnet')).rejects.toMatchObject({code: 'ALREADY_APPROVED'})
  })

  it('promotes devnet → testnet → mainnet (2 distinct approvers, one security-lead), every step audited, nodes verify the result', async () => {
    const testnet = await promote('olga', 'testnet')
    expect(testnet).toMatchObject({digest: DIGEST, track: 'testnet', version: 'v1.0'})
    await approve('olga', 'mainnet')
    await expect(promote('olga', 'mainnet')).rejects.toMatchObject({code: 'INSUFFICIENT_APPROVALS'})
    await approve('otto', 'mainnet')
    await expect(promote('olga', 'mainnet')).rejects.toMatchObject({code: 'INSUFFICIENT_APPROVALS'}) // no security-lead yet
    await approve('sam', 'mainnet')
    const mainnet = await promote('sam', 'mainnet')
    expect(mainnet.approvals).toHaveLength(3)
    // A node verifies it with only the manifests route: the keys and HQ's CA.
    const served = await users.vera!.client.request<{manifests: ImageManifest[]; keys: {key_id: string; public_key: string}[]}>('GET', `/v1/images/${DIGEST}/manifests`)
    expect(served.manifests.map((m) => m.track)).toEqual(['devnet', 'testnet', 'mainnet'])
    const onMainnet = served.manifests.find((m) => m.track === 'mainnet')!
    expect(verifyManifest(onMainnet, {keys: served.keys, caPem: t.admin.ca, isRevoked: () => false}, {track: 'mainnet', digest: DIGEST, minApprovals: 2})).toMatchObject({ok: true, approvers: ['olga', 'otto', 'sam']})
    expect(verifyManifest(onMainnet, {keys: served.keys, caPem: t.admin.ca, isRevoked: () => false}, {track: 'mainnet', digest: 'sha256:' + '0'.repeat(64), minApprovals: 2})).toMatchObject({ok: false, code: 'DIGEST_MISMATCH'})
    const listed = await users.vera!.client.request<{images: {track: string; approvals: number}[]}>('GET', '/v1/images?track=mainnet')
    expect(listed.images).toEqual([expect.objectContaining({track: 'mainnet', approvals: 3, pushed_by: 'ci-pipeline', signed_by: t.init.signing_key_id})])
    for (const action of ['image.push', 'image.approve', 'image.promote']) {
      let entries: {details: Record<string, unknown>}[] = []
      for (let i = 0; i < 50 && entries.length === 0; i++) {
        entries = (await users.vera!.client.auditPage({action})).entries
        if (entries.length === 0) await new Promise((r) => setTimeout(r, 100))
      }
      expect(entries.length, action).toBeGreaterThan(0)
    }
    // The sequencer places entries asynchronously: wait for the mainnet promotion's entry.
    let promotes: {details: Record<string, unknown>}[] = []
    for (let i = 0; i < 50 && !promotes.some((e) => e.details.to === 'mainnet'); i++) {
      promotes = (await users.vera!.client.auditPage({action: 'image.promote'})).entries
      if (!promotes.some((e) => e.details.to === 'mainnet')) await new Promise((r) => setTimeout(r, 100))
    }
    expect(promotes.map((e) => e.details)).toContainEqual(expect.objectContaining({to: 'mainnet', approvals: 3}))
  })

  it('lists no unsigned digests once the registry\'s only image is signed; deprecation withdraws it everywhere', async () => {
    const unsigned = await users.vera!.client.request<{unsigned: unknown[]}>('GET', '/v1/images/unsigned')
    // A viewer may not point HQ at another host.
    await expect(users.vera!.client.request('GET', '/v1/images/unsigned?registry=127.0.0.1:1')).rejects.toMatchObject({status: 403})
    expect(unsigned.unsigned.filter((u) => (u as {digest: string}).digest === DIGEST)).toEqual([])
    await expect(users.olga!.client.request('POST', `/v1/images/${DIGEST}/deprecate`, {reason: 'x'})).rejects.toMatchObject({status: 403})
    const dep = await users.sam!.client.request<{tracks: string[]}>('POST', `/v1/images/${DIGEST}/deprecate`, {reason: 'CVE-2026-0001'})
    expect(dep.tracks.sort()).toEqual(['devnet', 'mainnet', 'testnet'])
    const served = await users.vera!.client.request<{manifests: ImageManifest[]; keys: {key_id: string; public_key: string}[]}>('GET', `/v1/images/${DIGEST}/manifests`)
    const m = served.manifests.find((x) => x.track === 'mainnet')!
    expect(verifyManifest(m, {keys: served.keys, caPem: t.admin.ca, isRevoked: () => false}, {track: 'mainnet', minApprovals: 2})).toMatchObject({ok: false, code: 'DEPRECATED'})
    const after = await users.vera!.client.request<{unsigned: {digest: string}[]}>('GET', '/v1/images/unsigned')
    expect(after.unsigned.map((u) => u.digest)).toContain(DIGEST)
  })
})
