import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {loadNodeIdentity} from '../../src/node/identity.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {HqClient, type StackView} from '../../src/shared/hq-client.js'
import {approvalPayload, type ImageManifest, type TrustedKey} from '../../src/shared/manifest.js'
import {rollbackPayload, verifyDesiredState, verifyStackRecord, type DesiredState, type StackRecord, type StackSpec} from '../../src/shared/stack.js'
import {extendTrust, type ServedKey} from '../../src/shared/signing-keys.js'
import {signAsUser} from '../../src/shared/user-signature.js'
import {startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {joinTestNode, type TestNode} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
if (!REGISTRY && process.env.CI) throw new Error('JIL_TEST_REGISTRY is not set: run `eval "$(scripts/test-services.sh env)"` first')



const API = 'jil/stack-api'
const DB = 'jil/stack-db'

function spec(extra: Partial<StackSpec['services'][number]> = {}): StackSpec {
  return {
    services: [
      {name: 'api', image: API, critical: true, command: ['sleep', '3600'], ports: ['8080:80'], health: {test: ['CMD', 'true'], interval_s: 5}, ...extra},
      {name: 'db', image: DB, critical: false, mounts: [{type: 'volume', source: 'db-data', target: '/data'}]},
      // No manifest of this image anywhere: it stays unresolved.
      {name: 'cache', image: 'jil/stack-cache', critical: false},
    ],
  }
}

type Storage = {name: string; databaseUrl?: () => Promise<{url: string; drop: () => Promise<void>}>}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg', databaseUrl: freshPgDatabase}] : [])]

describe.runIf(REGISTRY).each(storages)('stacks and desired states on $name', (storage) => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pg: {url: string; drop: () => Promise<void>} | undefined
  const users: Record<string, {bundle: UserBundle; client: HqClient}> = {}
  const digests: Record<string, string> = {}
  const nodes: TestNode[] = []
  let testnetNode: TestNode
  let nodeClient: HqClient

  const as = (who: string) => users[who]!.client
  const sign = (version: string, image = API) => as('ci').request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/${image}:${version}`, version, commit: 'abcdef0'})
  const toTestnet = async (m: ImageManifest) => {
    await as('olga').request('POST', `/v1/images/${m.digest}/approvals`, {track: 'testnet', approval: signAsUser(approvalPayload(m, 'testnet'), users.olga!.bundle)})
    return as('olga').request<ImageManifest>('POST', `/v1/images/${m.digest}/promote`, {to: 'testnet'})
  }
  const pin = (who: string, body: Record<string, unknown>) => as(who).request<StackView>('POST', '/v1/stacks/testnet/pins', body)
  const nodeDesired = () => nodeClient.desiredState()
  const pinnedKeys = async (n: TestNode) => JSON.parse(await readFile(join(n.stateDir, 'signing-keys.json'), 'utf8')) as TrustedKey[]

  beforeAll(async () => {
    pg = storage.databaseUrl ? await storage.databaseUrl() : undefined
    t = await startTestHq({registry: REGISTRY, ...(pg ? {databaseUrl: pg.url} : {})})
    tmp = await tempDir()
    Object.assign(users, await testUsers(t, tmp.dir, [['ci', 'ci-pipeline'], ['olga', 'ops-lead'], ['otto', 'ops-lead'], ['vera', 'viewer']] as const))
    for (const v of ['v1.0', 'v1.1', 'v1.9', 'v1.10']) digests[`api@${v}`] = await pushTinyImage(API, v)
    digests['db@v2.0'] = await pushTinyImage(DB, 'v2.0')
    // api v1.0 and v1.1 reach testnet (in order: versions on a track only go up); v1.9 and v1.10 stay on devnet.
    for (const v of ['v1.0', 'v1.1']) await toTestnet(await sign(v))
    for (const v of ['v1.9', 'v1.10']) await sign(v)
    await toTestnet(await sign('v2.0', DB))
  })
  afterAll(async () => {
    await nodeClient?.close()
    for (const u of Object.values(users)) await u.client.close()
    for (const n of nodes) await n.cleanup()
    await t?.stop()
    await pg?.drop()
    await tmp?.cleanup()
  })

  it('sets versioned stack specs signed with HQ\'s key; only stack:manage may; bad specs are refused with the field named', async () => {
    await expect(as('vera').request('PUT', '/v1/stacks/testnet', {spec: spec()})).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    await expect(as('ci').request('PUT', '/v1/stacks/testnet', {spec: spec()})).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    const v1 = await as('olga').setStack('testnet', spec())
    expect(v1).toMatchObject({kind: 'jil.stack/v1', track: 'testnet', version: 1, created_by: 'olga', key_id: t.init.signing_key_id})
    const v2 = await as('admin').setStack('testnet', spec({env: {LOG_LEVEL: 'info'}}))
    expect(v2.version).toBe(2)
    const {keys} = await as('vera').signingKeys()
    expect(verifyStackRecord(v2, keys)).toBe(true)
    expect(verifyStackRecord({...v2, spec: spec()}, keys)).toBe(false)
    const shown = await as('vera').stack('testnet')
    expect(shown.stack).toEqual(v2)
    expect(verifyStackRecord(shown.stack as StackRecord, keys)).toBe(true)
    // Nothing pinned yet: no service has a version on testnet.
    expect(shown.versions).toEqual({api: null, db: null, cache: null})

    const dup = {services: [spec().services[0], spec().services[0]]}
    await expect(as('olga').setStack('testnet', dup as StackSpec)).rejects.toMatchObject({status: 400, code: 'STACK_INVALID'})
    const bad = {services: [{...spec().services[0], name: 'API'}]}
    await expect(as('olga').setStack('testnet', bad as StackSpec)).rejects.toMatchObject({status: 400, code: 'INVALID_BODY', details: {field: 'spec.services.0.name'}})
    const extra = {services: [{...spec().services[0], privileged: true}]}
    await expect(as('olga').setStack('testnet', extra as StackSpec)).rejects.toMatchObject({status: 400, details: {field: 'spec.services.0.privileged'}})
    // Signed as sent: nothing is coerced into shape (a string for a boolean, a string for a list).
    await expect(as('olga').setStack('testnet', {services: [{...spec().services[0], critical: 'true'}]} as unknown as StackSpec)).rejects.toMatchObject({status: 400, details: {field: 'spec.services.0.critical'}})
    await expect(as('olga').setStack('testnet', {services: [{...spec().services[0], command: 'sleep 5'}]} as unknown as StackSpec)).rejects.toMatchObject({status: 400, details: {field: 'spec.services.0.command'}})
    expect((await as('vera').stack('testnet')).stack?.version).toBe(2)
    await expect(as('olga').setStack('staging', spec())).rejects.toMatchObject({status: 404, code: 'TRACK_UNKNOWN'})
    await expect(as('vera').stack('staging')).rejects.toMatchObject({code: 'TRACK_UNKNOWN'})
    expect((await as('vera').stack('mainnet')).stack).toBeNull()
  })

  it('resolves devnet to the newest live signed devnet manifest of each image, numerically', async () => {
    await as('olga').setStack('devnet', spec())
    const view = await as('vera').stack('devnet')
    expect(view.versions.api).toMatchObject({version: 'v1.10', digest: digests['api@v1.10'], repository: `${REGISTRY}/${API}`, pinned_by: null})
    expect(view.versions.db).toMatchObject({version: 'v2.0', digest: digests['db@v2.0']})
    expect(view.versions.cache).toBeNull()
    await expect(as('olga').request('POST', '/v1/stacks/devnet/pins', {service: 'api', version: 'v1.9'})).rejects.toMatchObject({status: 400, code: 'PIN_DEVNET'})
  })

  it('pins testnet versions that have a live manifest there; a lower pin needs the caller\'s own signed rollback', async () => {
    await expect(pin('vera', {service: 'api', version: 'v1.1'})).rejects.toMatchObject({status: 403})
    await expect(pin('ci', {service: 'api', version: 'v1.1'})).rejects.toMatchObject({status: 403})
    await expect(pin('olga', {service: 'nope', version: 'v1.1'})).rejects.toMatchObject({status: 404, code: 'SERVICE_UNKNOWN'})
    await expect(pin('olga', {service: 'api', version: 'v1.9'})).rejects.toMatchObject({status: 409, code: 'NOT_ON_TRACK'}) // devnet only
    await expect(pin('olga', {service: 'cache', version: 'v1.0'})).rejects.toMatchObject({code: 'NOT_ON_TRACK'})
    await expect(pin('olga', {service: 'api', version: 'latest'})).rejects.toMatchObject({code: 'VERSION_INVALID'})

    const up = await pin('olga', {service: 'api', version: 'v1.1'})
    expect(up.versions.api).toMatchObject({version: 'v1.1', digest: digests['api@v1.1'], pinned_by: 'olga'})
    await pin('olga', {service: 'db', version: 'v2.0'})

    const down = rollbackPayload('testnet', 'api', API, digests['api@v1.0']!, 'v1.0')
    await expect(pin('olga', {service: 'api', version: 'v1.0'})).rejects.toMatchObject({status: 409, code: 'ROLLBACK_SIGNATURE_REQUIRED'})
    await expect(pin('olga', {service: 'api', version: 'v1.0', rollback: signAsUser(down, users.otto!.bundle)})).rejects.toMatchObject({status: 403, code: 'ROLLBACK_NOT_YOURS'})
    await expect(pin('olga', {service: 'api', version: 'v1.0', rollback: signAsUser({...down, digest: digests['api@v1.1']!}, users.olga!.bundle)})).rejects.toMatchObject({code: 'ROLLBACK_MISMATCH'})
    await expect(pin('olga', {service: 'api', version: 'v1.0', rollback: signAsUser({...down, purpose: 'approve'}, users.olga!.bundle)})).rejects.toMatchObject({code: 'PURPOSE_MISMATCH'})
    expect((await as('vera').stack('testnet')).versions.api?.version).toBe('v1.1')
    const back = await pin('olga', {service: 'api', version: 'v1.0', rollback: signAsUser(down, users.olga!.bundle)})
    expect(back.versions.api).toMatchObject({version: 'v1.0', digest: digests['api@v1.0']})

    let entries: {details: Record<string, unknown>}[] = []
    for (let i = 0; i < 50 && !entries.some((e) => e.details.rollback === true); i++) {
      entries = (await as('vera').auditPage({action: 'stack.pin'})).entries
      if (!entries.some((e) => e.details.rollback === true)) await new Promise((r) => setTimeout(r, 100))
    }
    expect(entries.map((e) => e.details)).toContainEqual({track: 'testnet', service: 'api', version: 'v1.0', digest: digests['api@v1.0'], from: 'v1.1', rollback: true})
    expect(entries.map((e) => e.details)).toContainEqual(expect.objectContaining({service: 'api', version: 'v1.1', from: null, rollback: false}))
  })

  it('serves a node its desired state signed with the key it pinned at join, carrying the rollback; the sequence moves only with the content', async () => {
    testnetNode = await joinTestNode(t.hq, t.admin, {nodeId: storage.name === 'pg' ? 'CH-STACKPG-01' : 'CH-STACK-01', track: 'testnet'})
    nodes.push(testnetNode)
    const id = await loadNodeIdentity(testnetNode.stateDir)
    nodeClient = await HqClient.connect(t.hq.url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
    const doc = await nodeDesired()
    expect(doc).toMatchObject({kind: 'jil.desired-state/v1', node_id: testnetNode.nodeId, zone: 'CH/FINMA', track: 'testnet', run_mode: 'running', config_version: 0, stack_version: 2, sequence: 1, unresolved: ['cache']})
    expect(Date.parse(doc.expires_at) - Date.parse(doc.issued_at)).toBe(3_600_000)
    const api = doc.services.find((s) => s.name === 'api')!
    expect(api).toMatchObject({image: API, repository: `${REGISTRY}/${API}`, digest: digests['api@v1.0'], version: 'v1.0', critical: true, env: {LOG_LEVEL: 'info'}, rollback: {payload: rollbackPayload('testnet', 'api', API, digests['api@v1.0']!, 'v1.0')}, rollback_at: expect.any(String)})
    expect(doc.services.find((s) => s.name === 'db')).toMatchObject({digest: digests['db@v2.0'], version: 'v2.0'})
    expect(doc.services.find((s) => s.name === 'db')!.rollback).toBeUndefined()

    const check = {keys: await pinnedKeys(testnetNode), nodeId: testnetNode.nodeId, track: 'testnet', zone: 'CH/FINMA', now: new Date(), lastSequence: 0, caPem: id.caPem, isRevoked: () => false}
    // A node running v1.1 accepts the way down because the document carries olga's rollback.
    expect(verifyDesiredState(doc, {...check, running: new Map([['api', 'v1.1']])})).toEqual({ok: true, refused: []})
    expect(verifyDesiredState({...doc, run_mode: 'stopped'}, {...check, running: new Map()})).toMatchObject({ok: false, code: 'DS_BAD_SIGNATURE'})
    expect(verifyDesiredState(doc, {...check, nodeId: 'CH-OTHER-01', running: new Map()})).toMatchObject({ok: false, code: 'DS_WRONG_NODE'})

    // Unchanged content: the same sequence. A new spec version: the next one.
    expect((await nodeDesired()).sequence).toBe(1)
    await as('olga').setStack('testnet', spec({env: {LOG_LEVEL: 'debug'}}))
    const next = await nodeDesired()
    expect(next).toMatchObject({sequence: 2, stack_version: 3})
    expect(next.services.find((s) => s.name === 'api')!.env).toEqual({LOG_LEVEL: 'debug'})
    expect((await nodeDesired()).sequence).toBe(2)
    expect(verifyDesiredState(next, {...check, lastSequence: 1, running: new Map([['api', 'v1.0']])})).toEqual({ok: true, refused: []})
    expect(verifyDesiredState(doc, {...check, lastSequence: 2, running: new Map()})).toMatchObject({ok: false, code: 'DS_REPLAY'})
    // A run-mode change (the fleet issue's stop/pause) is a content change too.
    await t.hq.db.query("UPDATE nodes SET run_mode = 'paused', config_version = 4 WHERE id = $1", [testnetNode.nodeId])
    expect(await nodeDesired()).toMatchObject({sequence: 3, run_mode: 'paused', config_version: 4})
    await t.hq.db.query("UPDATE nodes SET run_mode = 'running', config_version = 4 WHERE id = $1", [testnetNode.nodeId])
  })

  it('gives a node of a track without a spec a valid empty document; users get 403 and a revoked node 401', async () => {
    const main = await joinTestNode(t.hq, t.admin, {nodeId: storage.name === 'pg' ? 'SG-STACKPG-02' : 'SG-STACK-02', zone: 'SG/MAS', track: 'mainnet'})
    nodes.push(main)
    const id = await loadNodeIdentity(main.stateDir)
    const client = await HqClient.connect(t.hq.url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
    try {
      const doc: DesiredState = await client.desiredState()
      expect(doc).toMatchObject({node_id: main.nodeId, zone: 'SG/MAS', track: 'mainnet', stack_version: 0, services: [], unresolved: [], sequence: 1})
      expect(verifyDesiredState(doc, {keys: await pinnedKeys(main), nodeId: main.nodeId, track: 'mainnet', zone: 'SG/MAS', now: new Date(), lastSequence: 0, running: new Map(), caPem: id.caPem, isRevoked: () => false})).toEqual({ok: true, refused: []})
      await expect(as('admin').request('GET', '/v1/node/desired-state')).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
      // Nodes may not read or set stacks.
      await expect(client.stack('mainnet')).rejects.toMatchObject({status: 403})
      await as('admin').request('DELETE', `/v1/fleet/nodes/${main.nodeId}`, {reason: 'decommissioned'})
    } finally {
      await client.close()
    }
    const again = await HqClient.connect(t.hq.url, {cert: id.certPem, key: id.keyPem, ca: id.caPem})
    try {
      await expect(again.desiredState()).rejects.toMatchObject({status: 401, code: 'CERT_REVOKED'})
    } finally {
      await again.close()
    }
  })

  it('takes a deprecated manifest out of resolution: devnet falls back to the next newest, a deprecated pin is unresolved', async () => {
    await as('admin').request('POST', `/v1/images/${digests['api@v1.10']}/deprecate`, {reason: 'CVE-2026-0002'})
    expect((await as('vera').stack('devnet')).versions.api).toMatchObject({version: 'v1.9', digest: digests['api@v1.9']})
    await as('admin').request('POST', `/v1/images/${digests['api@v1.0']}/deprecate`, {reason: 'CVE-2026-0003'})
    expect((await as('vera').stack('testnet')).versions.api).toBeNull()
    const doc = await nodeDesired()
    expect(doc.unresolved).toEqual(['api', 'cache'])
    expect(doc.services.map((s) => s.name)).toEqual(['db'])
  })

  it('signs with the new key after a rotation; a node follows it along the endorsement chain', async () => {
    const next = await as('admin').request<ServedKey>('POST', '/v1/keys/rotate', {})
    const record = await as('olga').setStack('testnet', spec({env: {LOG_LEVEL: 'warn'}}))
    expect(record.key_id).toBe(next.key_id)
    const doc = await nodeDesired()
    expect(doc.key_id).toBe(next.key_id)
    const id = await loadNodeIdentity(testnetNode.stateDir)
    const check = {nodeId: testnetNode.nodeId, track: 'testnet', zone: 'CH/FINMA', now: new Date(), lastSequence: 0, running: new Map<string, string>(), caPem: id.caPem, isRevoked: () => false}
    const pinned = await pinnedKeys(testnetNode)
    expect(verifyDesiredState(doc, {...check, keys: pinned})).toMatchObject({ok: false, code: 'DS_UNKNOWN_KEY'})
    const {keys: served} = await nodeClient.signingKeys()
    expect(verifyDesiredState(doc, {...check, keys: extendTrust(pinned, served)})).toEqual({ok: true, refused: []})
  })
})
