import {spawn, type ChildProcess} from 'node:child_process'
import {mkdir, readFile, writeFile} from 'node:fs/promises'
import {createServer} from 'node:net'
import {join} from 'node:path'

import {request} from 'undici'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {hqPath} from '../../src/hq/datadir.js'
import {RegistryClient} from '../../src/hq/registry/oci.js'
import {registryAuthConfig, RegistryTokenIssuer, REGISTRY_SERVICE} from '../../src/hq/registry/token.js'
import type {AlertView} from '../../src/shared/alerts.js'
import {ManualClock} from '../../src/shared/clock.js'
import {startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {closeSuite, suiteState} from '../helpers/node.js'

const HAVE_REGISTRY = Boolean(process.env.JIL_TEST_REGISTRY)
if (!HAVE_REGISTRY && process.env.CI) throw new Error('JIL_TEST_REGISTRY is not set: run `eval "$(scripts/test-services.sh env)"` first')

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as {port: number}).port
      s.close(() => resolve(port))
    })
  })
}

/**
 * The registry side of image-unsigned against real docker-registry processes of this suite's own
 * (the shared test registry holds every other test's unsigned digests): first open, then in token-auth
 * mode with this HQ as its token server, then stopped. One HQ throughout, on one registry address.
 */
describe.runIf(HAVE_REGISTRY)('the alert engine walks HQ\'s registry for unsigned digests', () => {
  // Real time, moved by seconds only: the token-auth registry checks HQ's tokens against its own clock.
  const clock = new ManualClock(new Date())
  const SCAN_MS = 1000
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let port: number
  let registryAddr: string
  let storage: string
  let registry: ChildProcess | undefined
  const {users, nodes, as} = suiteState()
  const REPO = 'jil/rs-api'
  const digest: Record<string, string> = {}

  const fingerprint = (d: string) => `image-unsigned:registry:${registryAddr}/${REPO}@${d}`
  const alert = async (d: string, state?: AlertView['state']) => (await as('vera').alerts(state ? {state} : {})).alerts.find((a) => a.fingerprint === fingerprint(d))
  const registryOpen = async () => (await as('vera').alerts()).alerts.filter((a) => a.subject.startsWith('registry:')).map((a) => a.fingerprint).sort()
  const scans = async (outcome: 'ok' | 'failed') => Number(new RegExp(`jil_hq_alert_registry_scans_total\\{outcome="${outcome}"\\} (\\d+)`).exec(await as('vera').request<string>('GET', '/metrics'))?.[1])
  /**
   * The next walk is due, the tick starts it, the test waits for it (the evaluator never does).
   * settled(), not refresh(): a walk quicker than the evaluation has ended by then, and refresh()
   * would start another one.
   */
  async function walk(): Promise<void> {
    clock.advance(SCAN_MS)
    await t.hq.alerts.tick()
    await t.hq.registryScan!.settled()
  }

  async function startRegistry(auth: string): Promise<void> {
    const config = join(tmp.dir, 'registry.yml')
    await writeFile(config, `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\nhttp:\n  addr: ${registryAddr}\n${auth}`)
    registry = spawn('/usr/bin/docker-registry', ['serve', config], {stdio: 'ignore'})
    for (let i = 0; i < 100; i++) {
      const r = await request(`http://${registryAddr}/v2/`).catch(() => undefined)
      if (r) {
        await r.body.text()
        return
      }
      await new Promise((res) => setTimeout(res, 100))
    }
    throw new Error(`docker-registry did not come up on ${registryAddr}`)
  }
  async function stopRegistry(): Promise<void> {
    const r = registry
    registry = undefined
    if (!r || r.exitCode !== null) return
    const exited = new Promise((res) => r.once('exit', res))
    r.kill('SIGTERM')
    await exited
  }

  beforeAll(async () => {
    tmp = await tempDir()
    storage = join(tmp.dir, 'registry-data')
    await mkdir(storage)
    port = await freePort()
    registryAddr = `127.0.0.1:${port}`
    // Neither loop's timer fires during the test: the evaluator is ticked by hand.
    t = await startTestHq({clock, registry: registryAddr, rolloutTickMs: 2_000_000_000, alertEveryMs: 2_000_000_000, alerts: {registryScanMs: SCAN_MS}})
    Object.assign(users, await testUsers(t, tmp.dir, [['ci', 'ci-pipeline'], ['vera', 'viewer']] as const))
    await startRegistry('')
    digest.v1 = await pushTinyImage(REPO, 'v1', registryAddr)
  })
  afterAll(async () => {
    await stopRegistry()
    await closeSuite({nodes, users, hq: t, pg: undefined, tmp})
  })

  it('an unsigned digest in the registry opens a warning once a walk completed; signing it resolves it', async () => {
    // The first evaluation starts the walk and does not wait for it.
    expect(await t.hq.alerts.tick()).toMatchObject({evaluated: true, findings: 0})
    expect(await registryOpen()).toEqual([])
    await t.hq.registryScan!.settled()
    expect(await t.hq.alerts.tick()).toMatchObject({evaluated: true, findings: 1, opened: 1})
    expect(await alert(digest.v1!)).toMatchObject({
      rule: 'image-unsigned',
      subject: `registry:${registryAddr}/${REPO}@${digest.v1}`,
      node_id: null,
      severity: 'warning',
      state: 'open',
      summary: `${registryAddr}/${REPO} ${digest.v1!.slice(0, 19)} (v1) in the registry has no signed manifest`,
      details: {repository: `${registryAddr}/${REPO}`, tags: ['v1'], digest: digest.v1},
    })
    expect(await scans('ok')).toBe(1)

    await as('ci').request('POST', '/v1/images', {image: `${registryAddr}/${REPO}:v1`, version: 'v1.0', commit: 'abcdef0'})
    // The walk's digests meet the manifests as they are at each evaluation: no new walk needed.
    expect(await t.hq.alerts.tick()).toMatchObject({resolved: 1})
    expect(await alert(digest.v1!, 'resolved')).toMatchObject({state: 'resolved'})
    expect(await registryOpen()).toEqual([])
    expect(await scans('ok')).toBe(1)

    // A digest pushed after the walk shows at the next one.
    digest.v2 = await pushTinyImage(REPO, 'v2', registryAddr)
    await walk()
    expect(await t.hq.alerts.tick()).toMatchObject({opened: 1})
    expect(await registryOpen()).toEqual([fingerprint(digest.v2)])
  })

  it('walks a token-auth registry with a token HQ signs for itself, while a user asking HQ for the catalog gets nothing', async () => {
    // Pushed while the registry is open (the helper pushes anonymously); walked once it wants tokens.
    digest.v3 = await pushTinyImage(REPO, 'v3', registryAddr)
    await stopRegistry()
    await startRegistry(registryAuthConfig(t.hq.url, hqPath(t.dataDir, 'registryTokenCert')))
    // The registry refuses anonymous catalog requests now.
    const anonymous = await request(`http://${registryAddr}/v2/_catalog`)
    await anonymous.body.text()
    expect(anonymous.statusCode).toBe(401)
    expect(String(anonymous.headers['www-authenticate'])).toContain('scope="registry:catalog:*"')

    // A user's token request for the catalog: the token grants nothing, and the registry refuses it.
    const user = await as('vera').request<{token: string}>('GET', `/v1/registry/token?service=${REGISTRY_SERVICE}&scope=${encodeURIComponent('registry:catalog:*')}`)
    expect(JSON.parse(Buffer.from(user.token.split('.')[1]!, 'base64url').toString()).access).toEqual([])
    const refused = await request(`http://${registryAddr}/v2/_catalog`, {headers: {authorization: `Bearer ${user.token}`}})
    await refused.body.text()
    expect(refused.statusCode).toBe(401)

    const before = await scans('ok')
    await walk()
    expect(await scans('ok')).toBe(before + 1)
    expect(await scans('failed')).toBe(0)
    expect(await t.hq.alerts.tick()).toMatchObject({opened: 1})
    expect(await registryOpen()).toEqual([fingerprint(digest.v2!), fingerprint(digest.v3)].sort())
    // `jil hq images --unsigned` walks the token-auth registry the same way.
    const {unsigned} = await as('vera').request<{unsigned: {repository: string; tag: string; digest: string}[]}>('GET', '/v1/images/unsigned')
    expect(unsigned.sort((a, b) => a.tag.localeCompare(b.tag))).toEqual([
      {repository: `${registryAddr}/${REPO}`, tag: 'v2', digest: digest.v2},
      {repository: `${registryAddr}/${REPO}`, tag: 'v3', digest: digest.v3},
    ])
  })

  it('the client asks for a token once per scope and again only shortly before it expires', async () => {
    const issuer = new RegistryTokenIssuer(await readFile(hqPath(t.dataDir, 'registryTokenKey'), 'utf8'), await readFile(hqPath(t.dataDir, 'registryTokenCert'), 'utf8'), clock)
    const asked: string[] = []
    const own = new ManualClock(clock.now())
    const client = new RegistryClient(registryAddr, {tokenFor: (service, scope) => (asked.push(scope), issuer.issueForHq(service, scope)), clock: own})
    const expected = [`v1 ${digest.v1}`, `v2 ${digest.v2}`, `v3 ${digest.v3}`]
    const inventory = async () => (await client.inventory()).map((i) => `${i.tag} ${i.digest}`).sort()
    expect(await inventory()).toEqual(expected)
    expect(asked).toEqual(['registry:catalog:*', `repository:${REPO}:pull`])
    expect(await inventory()).toEqual(expected)
    expect(asked).toHaveLength(2)
    // HQ's tokens live 300 s; the client lets go of them 30 s early.
    own.advance(271_000)
    expect(await inventory()).toEqual(expected)
    expect(asked).toHaveLength(4)
  })

  it('a registry that cannot be reached keeps the alerts open and counts a failed walk', async () => {
    await stopRegistry()
    const failed = await scans('failed')
    await walk()
    expect(await scans('failed')).toBe(failed + 1)
    expect(await t.hq.alerts.tick()).toMatchObject({resolved: 0})
    expect(await registryOpen()).toEqual([fingerprint(digest.v2!), fingerprint(digest.v3!)].sort())
  })
})
