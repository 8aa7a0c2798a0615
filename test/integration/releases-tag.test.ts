import {execFileSync} from 'node:child_process'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {RegistryClient} from '../../src/hq/registry/oci.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {verifyManifest, type ImageManifest} from '../../src/shared/manifest.js'
import {startTestHq} from '../helpers/hq.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
const DOCKER = process.env.DOCKER_HOST

/** Pushes a one-file image with `content` as REGISTRY/jil/moving:v1 through the real Docker engine. */
function pushContent(content: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'jil-img-'))
  try {
    writeFileSync(join(dir, 'release.txt'), content)
    const tar = execFileSync('tar', ['-C', dir, '-cf', '-', 'release.txt'])
    execFileSync('docker', ['import', '-', `${REGISTRY}/jil/moving:v1`], {input: tar, stdio: ['pipe', 'ignore', 'pipe']})
    execFileSync('docker', ['push', `${REGISTRY}/jil/moving:v1`], {stdio: 'ignore'})
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }
}

describe.runIf(REGISTRY && DOCKER)('signatures pin digests, not tags', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let admin: HqClient
  beforeAll(async () => {
    t = await startTestHq({registry: REGISTRY})
    admin = await HqClient.connect(t.hq.url, t.admin)
  })
  afterAll(async () => {
    await admin?.close()
    await t?.stop()
  })

  it('keeps the signed digest when the tag moves: the new digest fails with DIGEST_MISMATCH; --unsigned lists exactly the unsigned ones', async () => {
    pushContent(`first ${Date.now()}`)
    const signed = await admin.request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/jil/moving:v1`, version: 'v1.0', commit: 'abcdef0'})
    pushContent(`second ${Date.now()}`)
    const moved = await (await RegistryClient.for(REGISTRY!)).resolve('jil/moving', 'v1')
    expect(moved).not.toBe(signed.digest)
    const {manifests, keys} = await admin.request<{manifests: ImageManifest[]; keys: {key_id: string; public_key: string}[]}>('GET', `/v1/images/${signed.digest}/manifests`)
    const trust = {keys, caPem: t.admin.ca, isRevoked: () => false}
    expect(verifyManifest(manifests[0]!, trust, {track: 'devnet', minApprovals: 0, digest: signed.digest})).toMatchObject({ok: true})
    expect(verifyManifest(manifests[0]!, trust, {track: 'devnet', minApprovals: 0, digest: moved})).toMatchObject({ok: false, code: 'DIGEST_MISMATCH'})
    // Unsigned: everything in the registry but the one digest this HQ signed.
    const inventory = await (await RegistryClient.for(REGISTRY!)).inventory()
    const {unsigned} = await admin.request<{unsigned: {digest: string}[]}>('GET', '/v1/images/unsigned')
    const expected = [...new Set(inventory.map((i) => i.digest).filter((d) => d !== signed.digest))].sort()
    expect([...new Set(unsigned.map((u) => u.digest))].sort()).toEqual(expected)
    expect(unsigned.map((u) => u.digest)).toContain(moved)
  })

  it('only lets versions on a track go up, unless an admin allows a downgrade (recorded); the pusher never approves', async () => {
    const {addUserOnline} = await import('../../src/cli/identity.js')
    const {readBundle} = await import('../../src/shared/bundle.js')
    const {signAsUser} = await import('../../src/shared/user-signature.js')
    const {approvalPayload} = await import('../../src/shared/manifest.js')
    const {tempDir} = await import('../helpers/hq.js')
    const tmp = await tempDir()
    try {
      const olgaBundle = await readBundle((await addUserOnline(admin, t.admin, 'olga', 'ops-lead', `${tmp.dir}/olga.json`)).bundle)
      const olga = await HqClient.connect(t.hq.url, olgaBundle)
      const release = async (content: string, version: string) => {
        pushContent(content)
        const m = await admin.request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/jil/moving:v1`, version, commit: 'abcdef0'})
        await olga.request('POST', `/v1/images/${m.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(m, 'testnet'), olgaBundle)})
        return m
      }
      const v3 = await release(`v3 ${Date.now()}`, 'v3.0')
      // The admin pushed it: the admin's own approval does not count.
      await expect(admin.request('POST', `/v1/images/${v3.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(v3, 'testnet'), t.admin)})).rejects.toMatchObject({code: 'APPROVER_IS_PUSHER'})
      await olga.request('POST', `/v1/images/${v3.digest}/promote`, {to: 'testnet'})
      const v2 = await release(`v2 ${Date.now()}`, 'v2.9')
      await expect(olga.request('POST', `/v1/images/${v2.digest}/promote`, {to: 'testnet'})).rejects.toMatchObject({code: 'VERSION_ROLLBACK'})
      await expect(olga.request('POST', `/v1/images/${v2.digest}/promote`, {to: 'testnet', allow_downgrade: true})).rejects.toMatchObject({code: 'FORBIDDEN'})
      const down = await admin.request<ImageManifest>('POST', `/v1/images/${v2.digest}/promote`, {to: 'testnet', allow_downgrade: true})
      expect(down).toMatchObject({track: 'testnet', version: 'v2.9'})
      let entries: {details: Record<string, unknown>}[] = []
      for (let i = 0; i < 50; i++) {
        entries = (await admin.auditPage({action: 'image.promote'})).entries
        if (entries.some((e) => e.details.downgrade_from)) break
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(entries.map((e) => e.details)).toContainEqual(expect.objectContaining({version: 'v2.9', downgrade_from: 'v3.0'}))
      await olga.close()
    } finally {
      await tmp.cleanup()
    }
  })
})
