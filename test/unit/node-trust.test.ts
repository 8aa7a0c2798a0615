import 'reflect-metadata'

import {webcrypto} from 'node:crypto'
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import * as x509 from '@peculiar/x509'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa, type IssuedWithKey, type KeyPairPem} from '../../src/hq/ca/ca.js'
import {signCrl} from '../../src/hq/ca/crl.js'
import {createNodeCsr, importNodeKey} from '../../src/node/csr.js'
import {nodePath} from '../../src/node/config.js'
import {initNode, type NodeIdentityFile} from '../../src/node/identity.js'
import {STATE_FILES} from '../../src/node/state.js'
import {signedByPinnedKeys} from '../../src/node/trust.js'
import {systemClock} from '../../src/shared/clock.js'
import {JilError} from '../../src/shared/errors.js'
import {approvalPayload, signManifest, type ImageManifest, type Track, type UnsignedManifest} from '../../src/shared/manifest.js'
import {ed25519PublicPem, fileSigner, generateEd25519Key, type Signer} from '../../src/shared/signing.js'
import {signAsUser} from '../../src/shared/user-signature.js'
import {tempDir} from '../helpers/hq.js'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const digestOf = (byte: string) => `sha256:${byte.repeat(32)}`

/**
 * The no-container runtime's pull gate checks a digest as the update agent does (verifyImage with the
 * node's stored trust): the node's track, its pinned keys, the track's approvals, the cached CRL.
 * The node's state dir is made here as a join leaves it, with a real CA, certificate and CRL.
 */
describe('signedByPinnedKeys', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pair: KeyPairPem
  let ca: CertificateAuthority
  let signer: Signer
  let olga: IssuedWithKey // ops-lead
  let otto: IssuedWithKey // ops-lead, revoked below

  /** A node joined on `track`: node.env and key (jil node init), then what a join writes. */
  async function joinedNode(name: string, track: Track): Promise<string> {
    const stateDir = join(tmp.dir, name)
    const nodeId = `CH-${name.toUpperCase()}-01`
    const init = await initNode({stateDir, nodeId, region: 'test-region', jurisdiction: 'CH/FINMA', hqUrl: 'https://127.0.0.1:1', operator: 'acme'})
    const keys = await importNodeKey(await readFile(init.key_file, 'utf8'))
    const csr = new x509.Pkcs10CertificateRequest(await createNodeCsr(nodeId, keys))
    const cert = await ca.issueNode(nodeId, 'CH/FINMA', csr.publicKey)
    await writeFile(nodePath(stateDir, 'ca'), pair.certPem)
    await writeFile(nodePath(stateDir, 'cert'), cert.pem)
    await writeFile(nodePath(stateDir, 'signingKeys'), JSON.stringify([{key_id: signer.keyId, public_key: ed25519PublicPem(signer.publicKey)}]))
    const identity: NodeIdentityFile = {node_id: nodeId, zone: 'CH/FINMA', track, operator: 'acme', hq_url: 'https://127.0.0.1:1', ca_fingerprint: 'sha256:' + '0'.repeat(64), joined_at: new Date().toISOString()}
    await writeFile(nodePath(stateDir, 'identity'), JSON.stringify(identity))
    await mkdir(join(stateDir, STATE_FILES.manifestsDir))
    return stateDir
  }

  const unsigned = (digest: string, track: Track): UnsignedManifest => ({image: 'jil/demo', repository: '127.0.0.1:5000/jil/demo', digest, version: 'v1.0', track, commit: 'abcdef1', created_at: new Date().toISOString()})
  const approvedBy = async (m: ImageManifest, users: IssuedWithKey[]): Promise<ImageManifest> => ({...m, approvals: users.map((u) => signAsUser(approvalPayload(m), {cert: u.pem, key: u.keyPem}))})
  const cache = (stateDir: string, digest: string, manifests: ImageManifest[]) =>
    writeFile(join(stateDir, STATE_FILES.manifestsDir, `${digest.replace(':', '-')}.json`), JSON.stringify({digest, fetched_at: '', manifests}))

  beforeAll(async () => {
    tmp = await tempDir('jil-trust-')
    pair = await createCa(systemClock)
    ca = await CertificateAuthority.load(pair, systemClock)
    signer = await fileSigner((await generateEd25519Key()).privatePem)
    ;[olga, otto] = await Promise.all([ca.issueUser('olga', 'ops-lead'), ca.issueUser('otto', 'ops-lead')])
  })
  afterAll(async () => {
    await tmp.cleanup()
  })

  it('accepts a digest signed with a pinned key for the node\'s own track, nothing else', async () => {
    const dir = await joinedNode('dev', 'devnet')
    const stranger = await fileSigner((await generateEd25519Key()).privatePem)
    const [ok, foreign, elsewhere] = [digestOf('5a'), digestOf('6b'), digestOf('8d')]
    await cache(dir, ok, [await signManifest(unsigned(ok, 'devnet'), signer)])
    await cache(dir, foreign, [await signManifest(unsigned(foreign, 'devnet'), stranger)])
    // Signed and approved, but for testnet: a devnet node does not run it.
    await cache(dir, elsewhere, [await approvedBy(await signManifest(unsigned(elsewhere, 'testnet'), signer), [olga])])
    const signed = signedByPinnedKeys(dir)
    expect(await signed(ok)).toBe(true)
    expect(await signed(foreign)).toBe(false)
    expect(await signed(elsewhere)).toBe(false)
    expect(await signed(digestOf('7c'))).toBe(false)
    expect(await signed('latest')).toBe(false)
    // A damaged cache entry is no manifest.
    await writeFile(join(dir, STATE_FILES.manifestsDir, `${ok.replace(':', '-')}.json`), '{"manifests": ')
    expect(await signed(ok)).toBe(false)
  })

  it('needs the track\'s approvals, and refuses one by a user the cached CRL revokes', async () => {
    const dir = await joinedNode('test', 'testnet')
    const [byOlga, byOtto, none] = [digestOf('1a'), digestOf('2b'), digestOf('3c')]
    await cache(dir, byOlga, [await approvedBy(await signManifest(unsigned(byOlga, 'testnet'), signer), [olga])])
    await cache(dir, byOtto, [await approvedBy(await signManifest(unsigned(byOtto, 'testnet'), signer), [otto])])
    await cache(dir, none, [await signManifest(unsigned(none, 'testnet'), signer)])
    const signed = signedByPinnedKeys(dir)
    expect([await signed(byOlga), await signed(byOtto), await signed(none)]).toEqual([true, true, false])
    const crl = await signCrl({caCertPem: pair.certPem, caKeyPem: pair.keyPem, revoked: [{serial: otto.serial, revokedAt: new Date()}], number: 1, now: new Date(), validForMs: 86_400_000})
    await writeFile(join(dir, STATE_FILES.crl), crl.pem)
    expect([await signed(byOlga), await signed(byOtto)]).toEqual([true, false])
    // A CRL not signed by HQ's CA is refused, not taken as "nothing revoked".
    const other = await createCa(systemClock)
    await writeFile(join(dir, STATE_FILES.crl), (await signCrl({caCertPem: other.certPem, caKeyPem: other.keyPem, revoked: [], number: 1, now: new Date(), validForMs: 86_400_000})).pem)
    await expect(signed(byOlga)).rejects.toMatchObject({code: 'CRL_INVALID'})
  })

  it('says the node has not joined when its state dir has no identity', async () => {
    const dir = join(tmp.dir, 'bare')
    await initNode({stateDir: dir, nodeId: 'CH-BARE-01', region: 'test-region', jurisdiction: 'CH/FINMA', hqUrl: 'https://127.0.0.1:1', operator: 'acme'})
    await mkdir(join(dir, STATE_FILES.manifestsDir))
    const d = digestOf('4d')
    await cache(dir, d, [await signManifest(unsigned(d, 'devnet'), signer)])
    const err = await signedByPinnedKeys(dir)(d).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(JilError)
    expect((err as JilError).code).toBe('NODE_NOT_JOINED')
  })
})
