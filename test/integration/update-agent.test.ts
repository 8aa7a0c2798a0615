import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {hqPath} from '../../src/hq/datadir.js'
import {runAgent} from '../../src/node/agents/run.js'
import {applyDesiredState, updateAgent, updateReport, type UpdateResult} from '../../src/node/agents/update.js'
import {oldName} from '../../src/node/reconcile.js'
import {containerName, DockerRuntime, type ManagedContainer} from '../../src/node/runtime.js'
import {readAppliedDesiredState, readLastReport} from '../../src/node/state.js'
import {loadTrust} from '../../src/node/trust.js'
import {readSecret} from '../../src/shared/files.js'
import {fileSigner, type Signer} from '../../src/shared/signing.js'
import {signDocument, type DesiredService, type DesiredState, type RunMode, type UnsignedDesiredState} from '../../src/shared/stack.js'
import {startTestHq} from '../helpers/hq.js'
import {containersOf, forgetImage, hasLocalImage, makeTestImage, removeContainersOf, signTestImage, type TestImage} from '../helpers/images.js'
import {joinTestNode, testAgentContext, userClient, type TestNode} from '../helpers/node.js'

const IMAGE = process.env.JIL_TEST_IMAGE
if (!IMAGE && process.env.CI) throw new Error('JIL_TEST_IMAGE is not set: run `eval "$(scripts/test-services.sh env)"` first')

const NODE = 'CH-UPDAG-01'
const OTHER = 'SG-UPDAG-02'
const HOUR = 3_600_000
/** Fast enough for tests: a health check every second, one failure is unhealthy; no health check = 1 s of running. */
const ENV = {JIL_UPDATE_GRACE: '1s', JIL_UPDATE_HEALTH_TIMEOUT: '45s'}

describe.runIf(IMAGE)('the update agent on a real engine, registry and HQ', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let node: TestNode
  let other: TestNode
  let signer: Signer
  let rt: DockerRuntime
  // v1.0 and v1.1 are good (they have /ready); v1.2 is signed but fails its health check; unsigned is never signed.
  const img: Record<'v1.0' | 'v1.1' | 'v1.2' | 'unsigned', TestImage> = {} as never
  let otherContainer: {id: string; startedAt: string | null}
  let stopped = false

  const api = (i: TestImage, version: string): DesiredService => ({
    name: 'api',
    image: i.image,
    repository: i.repository,
    digest: i.digest,
    version,
    command: ['sleep', '3600'],
    critical: true,
    network: 'none',
    health: {test: ['CMD-SHELL', 'test -f /ready'], interval_s: 1, timeout_s: 1, retries: 1},
    stop_timeout_s: 1,
  })
  const worker = (i: TestImage, version: string): DesiredService => ({name: 'worker', image: i.image, repository: i.repository, digest: i.digest, version, command: ['sleep', '7200'], critical: false, network: 'none', stop_timeout_s: 1})

  async function doc(services: DesiredService[], sequence: number, o: {runMode?: RunMode; expiresAt?: Date; nodeId?: string} = {}): Promise<DesiredState> {
    const now = Date.now()
    const unsigned: UnsignedDesiredState = {
      kind: 'jil.desired-state/v1',
      node_id: o.nodeId ?? NODE,
      zone: 'CH/FINMA',
      track: 'devnet',
      sequence,
      issued_at: new Date(now - 60_000).toISOString(),
      expires_at: (o.expiresAt ?? new Date(now + HOUR)).toISOString(),
      run_mode: o.runMode ?? 'running',
      config_version: 1,
      stack_version: 1,
      services,
      unresolved: [],
    }
    return signDocument(unsigned, signer)
  }

  async function apply(d: DesiredState, o: {signal?: AbortSignal} = {}): Promise<UpdateResult> {
    const ctx = await testAgentContext(node, {env: ENV, ...o})
    try {
      return await applyDesiredState(ctx, d, await loadTrust(ctx, {refresh: true}))
    } finally {
      await ctx.close()
    }
  }

  const mine = async (): Promise<ManagedContainer[]> => (await rt.list(NODE)).sort((a, b) => a.name.localeCompare(b.name))
  /** What a refused or failed change must leave as it was (health is left out: the engine's checks move it on their own). */
  const unchanged = (cs: ManagedContainer[]) => cs.map(({health: _h, ...c}) => c)
  const byService = async (service: string) => (await mine()).filter((c) => c.service === service)

  beforeAll(async () => {
    t = await startTestHq({registry: IMAGE!.split('/')[0]})
    signer = await fileSigner(await readSecret(hqPath(t.dataDir, 'signingKey'), 'signing key'))
    node = await joinTestNode({url: t.hq.url, caFingerprint: t.init.ca_fingerprint}, t.admin, {nodeId: NODE})
    other = await joinTestNode({url: t.hq.url, caFingerprint: t.init.ca_fingerprint}, t.admin, {nodeId: OTHER, zone: 'SG/MAS'})
    rt = await DockerRuntime.connect(process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST)
    await removeContainersOf(NODE)
    await removeContainersOf(OTHER)
    // v1.0 is not on the engine: the node must pull it by digest.
    img['v1.0'] = await makeTestImage({local: false})
    img['v1.1'] = await makeTestImage()
    img['v1.2'] = await makeTestImage({ready: false})
    img.unsigned = await makeTestImage({local: false})
    for (const v of ['v1.0', 'v1.1', 'v1.2'] as const) await signTestImage(t.hq.url, t.admin, img[v], v)
    // Another node on the same engine, with a service of the same name.
    const id = await rt.create(OTHER, api(img['v1.1'], 'v1.1'), containerName(OTHER, 'api'))
    await rt.start(id)
    otherContainer = {id, startedAt: (await rt.inspect(id)).startedAt}
  })
  afterAll(async () => {
    await removeContainersOf(NODE).catch(() => {})
    await removeContainersOf(OTHER).catch(() => {})
    for (const i of Object.values(img)) await forgetImage(i.repository, i.digest, i.tag)
    await node?.cleanup()
    await other?.cleanup()
    if (!stopped) await t?.stop()
  })

  let first: DesiredState

  it('brings a fresh node with an empty engine up with its whole stack, pulling by digest', async () => {
    expect(await mine()).toEqual([])
    expect(await hasLocalImage(img['v1.0'].repository, img['v1.0'].digest)).toBe(false)
    first = await doc([api(img['v1.0'], 'v1.0'), worker(img['v1.0'], 'v1.0')], 1)
    const r = await apply(first)
    expect(r).toMatchObject({status: 'applied', sequence: 1, run_mode: 'running'})
    if (r.status !== 'applied') return
    expect(r.actions).toEqual([
      {service: 'api', action: 'create', from: null, to: {version: 'v1.0', digest: img['v1.0'].digest}, outcome: 'ok'},
      {service: 'worker', action: 'create', from: null, to: {version: 'v1.0', digest: img['v1.0'].digest}, outcome: 'ok'},
    ])
    expect(await hasLocalImage(img['v1.0'].repository, img['v1.0'].digest)).toBe(true)
    const cs = await mine()
    expect(cs.map((c) => [c.name, c.state, c.digest, c.version])).toEqual([
      [containerName(NODE, 'api'), 'running', img['v1.0'].digest, 'v1.0'],
      [containerName(NODE, 'worker'), 'running', img['v1.0'].digest, 'v1.0'],
    ])
    expect((await rt.inspect(cs[0]!.id)).health).toBe('healthy')
    expect((await readAppliedDesiredState(node.stateDir))?.sequence).toBe(1)
    expect(updateReport(r).summary).toBe('0 services up to date, 2 created (api v1.0, worker v1.0)')
    // Applying the same document again changes nothing.
    const again = await apply(first)
    expect(again).toMatchObject({status: 'applied', actions: []})
    expect(updateReport(again).summary).toBe('2 services up to date')
  })

  it('moves a service to a newly signed digest, rolling: new one healthy, old one removed, the other service untouched', async () => {
    const before = await mine()
    const r = await apply(await doc([api(img['v1.1'], 'v1.1'), worker(img['v1.0'], 'v1.0')], 2))
    expect(r).toMatchObject({status: 'applied', actions: [{service: 'api', action: 'replace', from: {version: 'v1.0', digest: img['v1.0'].digest}, to: {version: 'v1.1', digest: img['v1.1'].digest}, outcome: 'ok'}]})
    const after = await mine()
    expect(after.map((c) => [c.name, c.state, c.version])).toEqual([
      [containerName(NODE, 'api'), 'running', 'v1.1'],
      [containerName(NODE, 'worker'), 'running', 'v1.0'],
    ])
    expect(after[0]!.id).not.toBe(before[0]!.id)
    expect(after[0]!.digest).toBe(img['v1.1'].digest)
    expect(after[0]!.image).toBe(`${img['v1.1'].repository}@${img['v1.1'].digest}`)
    expect(after[1]!.id).toBe(before[1]!.id)
    expect(updateReport(r).summary).toBe('1 service up to date, 1 updated (api v1.0 → v1.1)')
  })

  it('refuses a replayed older desired state and an expired one, and changes nothing', async () => {
    const before = await mine()
    const replay = await apply(first)
    expect(replay).toMatchObject({status: 'refused', code: 'DS_REPLAY', sequence: 1})
    const expired = await apply(await doc([api(img['v1.0'], 'v1.0')], 9, {expiresAt: new Date(Date.now() - 60_000)}))
    expect(expired).toMatchObject({status: 'refused', code: 'DS_EXPIRED'})
    const report = updateReport(expired)
    expect(report.findings).toEqual([expect.objectContaining({id: 'desired-state-refused', severity: 'critical', evidence: expect.stringContaining('DS_EXPIRED')})])
    expect(report.findings[0]!.remediation).toMatch(/freeze/)
    // A document for another node is refused too.
    expect(await apply(await doc([api(img['v1.0'], 'v1.0')], 9, {nodeId: OTHER}))).toMatchObject({status: 'refused', code: 'DS_WRONG_NODE'})
    expect(unchanged(await mine())).toEqual(unchanged(before))
    expect((await readAppliedDesiredState(node.stateDir))?.sequence).toBe(2)
  })

  it('keeps the old container when the new image fails its health check, and reports the failure', async () => {
    const before = await byService('api')
    const r = await apply(await doc([api(img['v1.2'], 'v1.2'), worker(img['v1.0'], 'v1.0')], 3))
    expect(r).toMatchObject({status: 'applied', actions: [{service: 'api', action: 'replace', to: {version: 'v1.2'}, outcome: 'failed', error: {code: 'UNHEALTHY'}}]})
    const after = await byService('api')
    expect(after.map((c) => [c.id, c.name, c.state, c.version])).toEqual([[before[0]!.id, containerName(NODE, 'api'), 'running', 'v1.1']])
    // Nothing of the failed version is left on the node.
    expect((await containersOf(NODE)).filter((c) => c.image.includes(img['v1.2'].digest))).toEqual([])
    const report = updateReport(r)
    expect(report.summary).toBe('1 service up to date, 1 failed (api replace: UNHEALTHY)')
    expect(report.findings).toEqual([expect.objectContaining({id: 'update-failed:api', severity: 'warning'})])
  })

  it('refuses an unsigned digest before pulling it or creating any container from it', async () => {
    const before = await mine()
    const r = await apply(await doc([api(img.unsigned, 'v1.3'), worker(img['v1.0'], 'v1.0')], 4))
    expect(r).toMatchObject({status: 'applied', actions: [{service: 'api', action: 'replace', to: {digest: img.unsigned.digest}, outcome: 'refused', error: {code: 'UNSIGNED'}}]})
    expect(unchanged(await mine())).toEqual(unchanged(before))
    expect((await containersOf(NODE)).filter((c) => c.image.includes(img.unsigned.digest))).toEqual([])
    expect(await hasLocalImage(img.unsigned.repository, img.unsigned.digest)).toBe(false)
    const report = updateReport(r)
    expect(report.findings).toEqual([expect.objectContaining({id: 'unsigned-image:api', severity: 'critical', evidence: expect.stringContaining(img.unsigned.digest)})])
    expect(report.summary).toBe('1 service up to date, 1 refused (api)')
  })

  it('refuses a lower version without a signed rollback (DS_ROLLBACK_UNSIGNED), and applies the rest of the document', async () => {
    const before = await mine()
    const r = await apply(await doc([api(img['v1.0'], 'v1.0'), worker(img['v1.0'], 'v1.0')], 5))
    expect(r).toMatchObject({status: 'applied', actions: [{service: 'api', outcome: 'refused', from: {version: 'v1.1'}, to: {version: 'v1.0'}, error: {code: 'DS_ROLLBACK_UNSIGNED'}}]})
    expect(updateReport(r).findings.map((f) => f.id)).toEqual(['rollback-unsigned:api'])
    expect(unchanged(await mine())).toEqual(unchanged(before))
    expect((await readAppliedDesiredState(node.stateDir))?.sequence).toBe(5)
  })

  it('stops listed services without removing them when stopped, starts them again when running', async () => {
    const before = await mine()
    const stopped = await apply(await doc([api(img['v1.1'], 'v1.1'), worker(img['v1.0'], 'v1.0')], 6, {runMode: 'stopped'}))
    expect(stopped).toMatchObject({status: 'applied', run_mode: 'stopped', actions: [{service: 'api', action: 'stop', outcome: 'ok'}, {service: 'worker', action: 'stop', outcome: 'ok'}]})
    expect((await mine()).map((c) => [c.id, c.state])).toEqual(before.map((c) => [c.id, 'exited']))
    const running = await apply(await doc([api(img['v1.1'], 'v1.1'), worker(img['v1.0'], 'v1.0')], 7))
    expect(running).toMatchObject({actions: [{action: 'start', outcome: 'ok'}, {action: 'start', outcome: 'ok'}]})
    expect((await mine()).map((c) => [c.id, c.state])).toEqual(before.map((c) => [c.id, 'running']))
  })

  it('removes a leftover of an interrupted replace and an unlisted service; never another node\'s containers', async () => {
    const canonical = containerName(NODE, 'api')
    const leftover = await rt.create(NODE, api(img['v1.0'], 'v1.0'), oldName(canonical, 'deadbeef0000'))
    const apiBefore = (await byService('api')).find((c) => c.name === canonical)!
    const r = await apply(await doc([api(img['v1.1'], 'v1.1')], 8))
    expect(r).toMatchObject({
      status: 'applied',
      actions: [
        {service: 'api', action: 'remove', outcome: 'ok', to: null},
        {service: 'worker', action: 'remove', from: {version: 'v1.0'}, outcome: 'ok'},
      ],
    })
    const after = await mine()
    expect(after.map((c) => [c.id, c.name, c.state])).toEqual([[apiBefore.id, canonical, 'running']])
    expect(after.some((c) => c.id === leftover)).toBe(false)
    // The other node's container on the same engine: same container, never restarted.
    const theirs = await rt.inspect(otherContainer.id)
    expect(theirs).toMatchObject({nodeId: OTHER, state: 'running', startedAt: otherContainer.startedAt})
    expect((await rt.list(OTHER)).map((c) => c.id)).toEqual([otherContainer.id])
  })
  it('gives up the health wait when the node is stopping, and restores the old container', async () => {
    const before = (await byService('api'))[0]!
    // Same digest, another health check: a changed spec is replaced like a changed digest. Its first check is a minute away.
    const slow = {...api(img['v1.1'], 'v1.1'), health: {test: ['CMD-SHELL', 'test -f /ready'], interval_s: 60, retries: 1}}
    const stop = new AbortController()
    const timer = setTimeout(() => stop.abort(), 1500)
    const r = await apply(await doc([slow], 10), {signal: stop.signal}).finally(() => clearTimeout(timer))
    expect(r).toMatchObject({status: 'applied', actions: [{service: 'api', action: 'replace', outcome: 'failed', error: {code: 'UPDATE_ABORTED'}}]})
    expect((await byService('api')).map((c) => [c.id, c.name, c.state, c.specHash])).toEqual([[before.id, containerName(NODE, 'api'), 'running', before.specHash]])
  })

  it('reports a new service whose process exits, and leaves it for the health agent', async () => {
    const batch: DesiredService = {name: 'batch', image: img['v1.1'].image, repository: img['v1.1'].repository, digest: img['v1.1'].digest, version: 'v1.1', command: ['sh', '-c', 'exit 3'], critical: false, network: 'none'}
    const r = await apply(await doc([api(img['v1.1'], 'v1.1'), batch], 11))
    expect(r).toMatchObject({status: 'applied', actions: [{service: 'batch', action: 'create', outcome: 'failed', error: {code: 'CONTAINER_EXITED'}}]})
    expect((await byService('batch')).map((c) => c.state)).toEqual(['exited'])
    expect(updateReport(r).findings).toEqual([expect.objectContaining({id: 'update-failed:batch', severity: 'critical', evidence: expect.stringContaining('code 3')})])
  })

  it('runs one update at a time: a second one while the first runs is refused as busy', async () => {
    const d = await doc([{...api(img['v1.1'], 'v1.1'), env: {GENERATION: '2'}}], 12)
    const [a, b] = await Promise.allSettled([apply(d), apply(d)])
    const results = [a, b]
    expect(results.filter((x) => x.status === 'fulfilled')).toHaveLength(1)
    expect(results.filter((x) => x.status === 'rejected').map((x) => (x as PromiseRejectedResult).reason.code)).toEqual(['UPDATE_BUSY'])
    expect((await byService('api')).map((c) => [c.state, c.version])).toEqual([['running', 'v1.1']])
  })
  describe('through HQ: the devnet stack, GET /v1/node/desired-state and the agent', () => {
    const E2E = 'DE-UPDAG-03'
    let e2e: TestNode
    const e2eImg: Record<'api2.0' | 'api2.1' | 'worker', TestImage> = {} as never
    const e2eContainers = async () => (await rt.list(E2E)).sort((a, b) => a.name.localeCompare(b.name)).map((c) => [c.name, c.state, c.version, c.digest])

    beforeAll(async () => {
      e2e = await joinTestNode({url: t.hq.url, caFingerprint: t.init.ca_fingerprint}, t.admin, {nodeId: E2E, zone: 'DE/BAFIN'})
      await removeContainersOf(E2E)
      e2eImg['api2.0'] = await makeTestImage({name: 'jil/updag-api'})
      e2eImg['api2.1'] = await makeTestImage({name: 'jil/updag-api'})
      e2eImg.worker = await makeTestImage({name: 'jil/updag-worker', local: false})
      await signTestImage(t.hq.url, t.admin, e2eImg['api2.0'], 'v2.0')
      await signTestImage(t.hq.url, t.admin, e2eImg.worker, 'v1.0')
      const admin = await userClient(t.hq.url, t.admin)
      try {
        await admin.setStack('devnet', {
          services: [
            {name: 'api', image: 'jil/updag-api', command: ['sleep', '3600'], critical: true, network: 'none', health: {test: ['CMD-SHELL', 'test -f /ready'], interval_s: 1, timeout_s: 1, retries: 1}, stop_timeout_s: 1},
            {name: 'worker', image: 'jil/updag-worker', command: ['sleep', '7200'], critical: false, network: 'none', stop_timeout_s: 1},
          ],
        })
      } finally {
        await admin.close()
      }
    })
    afterAll(async () => {
      await removeContainersOf(E2E).catch(() => {})
      for (const i of Object.values(e2eImg)) await forgetImage(i.repository, i.digest, i.tag)
      await e2e?.cleanup()
    })

    it('brings a fresh node up with the stack HQ serves, then rolls out a newly signed version on the next run', async () => {
      const ctx = await testAgentContext(e2e, {env: ENV})
      try {
        const first = await updateAgent(ctx)
        expect(first).toMatchObject({summary: '0 services up to date, 2 created (api v2.0, worker v1.0)', findings: [], details: {sequence: 1, run_mode: 'running', unresolved: []}})
        expect(await e2eContainers()).toEqual([
          [containerName(E2E, 'api'), 'running', 'v2.0', e2eImg['api2.0'].digest],
          [containerName(E2E, 'worker'), 'running', 'v1.0', e2eImg.worker.digest],
        ])
        await signTestImage(t.hq.url, t.admin, e2eImg['api2.1'], 'v2.1')
        const report = await runAgent('update', ctx)
        expect(report).toMatchObject({agent: 'update', node_id: E2E, ok: true, summary: '1 service up to date, 1 updated (api v2.0 → v2.1)', details: {sequence: 2}})
        expect(await readLastReport(e2e.stateDir, 'update')).toEqual(report)
        expect(await e2eContainers()).toEqual([
          [containerName(E2E, 'api'), 'running', 'v2.1', e2eImg['api2.1'].digest],
          [containerName(E2E, 'worker'), 'running', 'v1.0', e2eImg.worker.digest],
        ])
      } finally {
        await ctx.close()
      }
    })

    it('fails the run when HQ cannot be reached, and changes nothing', async () => {
      const before = await e2eContainers()
      await t.stop()
      stopped = true
      const ctx = await testAgentContext(e2e, {env: ENV})
      try {
        const report = await runAgent('update', ctx)
        expect(report).toMatchObject({ok: false, error: {code: 'HQ_UNREACHABLE'}})
      } finally {
        await ctx.close()
      }
      expect(await e2eContainers()).toEqual(before)
      expect((await readAppliedDesiredState(e2e.stateDir))?.sequence).toBe(2)
    })
  })
})
