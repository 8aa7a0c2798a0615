import {spawn, type ChildProcess} from 'node:child_process'
import {readFile, writeFile} from 'node:fs/promises'
import {createServer} from 'node:net'
import {join} from 'node:path'

import {Agent, request} from 'undici'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {hqPath} from '../../src/hq/datadir.js'
import {RegistryTokenIssuer, registryAuthConfig, REGISTRY_SERVICE} from '../../src/hq/registry/token.js'
import {ManualClock} from '../../src/shared/clock.js'
import {newKeyAndCsr} from '../../src/shared/csr.js'
import {startTestHq, tempDir} from '../helpers/hq.js'

const DATA = process.env.JIL_TEST_REGISTRY_DATA
const DIGEST = process.env.JIL_TEST_IMAGE_DIGEST
if (!DATA && process.env.CI) throw new Error('JIL_TEST_REGISTRY_DATA is not set: run `eval "$(scripts/test-services.sh env)"` first')
const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json'

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as {port: number}).port
      s.close(() => resolve(port))
    })
  })
}

describe.runIf(DATA)('HQ as the token server of a real docker-registry', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let registry: ChildProcess
  let regUrl: string
  let node: {cert: string; key: string}

  const call = async (path: string, id: {cert?: string; key?: string}, method: 'GET' | 'POST' | 'DELETE' = 'GET', body?: unknown) => {
    const agent = new Agent({connect: {ca: t.admin.ca, ...id}})
    try {
      const r = await request(t.hq.url + path, {method, dispatcher: agent, ...(body ? {body: JSON.stringify(body), headers: {'content-type': 'application/json'}} : {})})
      return {status: r.statusCode, json: (await r.body.json()) as any}
    } finally {
      await agent.close()
    }
  }
  const pull = async (token?: string, path = '/v2/jil/busybox/manifests/test', method: 'GET' | 'POST' = 'GET') => {
    const r = await request(regUrl + path, {method, headers: {accept: ACCEPT, ...(token ? {authorization: `Bearer ${token}`} : {})}})
    await r.body.text()
    return {status: r.statusCode, digest: r.headers['docker-content-digest']}
  }

  beforeAll(async () => {
    t = await startTestHq()
    tmp = await tempDir()
    const port = await freePort()
    regUrl = `http://127.0.0.1:${port}`
    const config = join(tmp.dir, 'registry.yml')
    await writeFile(config, `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${DATA}\nhttp:\n  addr: 127.0.0.1:${port}\n${registryAuthConfig(t.hq.url, hqPath(t.dataDir, 'registryTokenCert'))}`)
    registry = spawn('/usr/bin/docker-registry', ['serve', config], {stdio: 'ignore'})
    for (let i = 0; i < 100; i++) {
      const r = await request(`${regUrl}/v2/`).catch(() => undefined)
      if (r) {
        await r.body.text()
        break
      }
      await new Promise((res) => setTimeout(res, 100))
    }
    // A node that joined.
    await call('/v1/operators', t.admin, 'POST', {name: 'Helvetia Nodes AG', kyc: 'approved'})
    const admit = await call('/v1/fleet/nodes', t.admin, 'POST', {node_id: 'CH-ZUG-01', zone: 'CH/FINMA', operator: 'Helvetia Nodes AG'})
    const {keyPem, csrPem} = await newKeyAndCsr('CH-ZUG-01', 'jil://node/CH-ZUG-01')
    const joined = await call('/v1/node/join', {}, 'POST', {token: admit.json.token, csr: csrPem, operator: 'Helvetia Nodes AG', hardware: {machine_id: 'm', cpu_cores: 64, memory_bytes: 1e12, disk_bytes: 1e13}})
    expect(joined.status).toBe(200)
    node = {cert: joined.json.cert, key: keyPem}
  })
  afterAll(async () => {
    registry?.kill('SIGTERM')
    await t?.stop()
    await tmp?.cleanup()
  })

  it('lets an active node pull with a short-lived token from HQ, and nothing without one', async () => {
    expect((await pull()).status).toBe(401)
    const r = await call(`/v1/registry/token?service=${REGISTRY_SERVICE}&scope=repository:jil/busybox:pull,push`, node)
    expect(r.status).toBe(200)
    expect(r.json.expires_in).toBe(300)
    const claims = JSON.parse(Buffer.from(r.json.token.split('.')[1], 'base64url').toString())
    expect(claims).toMatchObject({iss: 'jil-hq', aud: REGISTRY_SERVICE, sub: 'node:CH-ZUG-01', access: [{type: 'repository', name: 'jil/busybox', actions: ['pull']}]})
    const got = await pull(r.json.token)
    expect(got).toMatchObject({status: 200, digest: DIGEST})
    // A node never gets push: the registry refuses an upload with its token.
    expect((await pull(r.json.token, '/v2/jil/busybox/blobs/uploads/', 'POST')).status).toBe(401)
    // A token for another repository does not open this one.
    const other = await call(`/v1/registry/token?service=${REGISTRY_SERVICE}&scope=repository:jil/other:pull`, node)
    expect((await pull(other.json.token)).status).toBe(401)
    expect((await call('/v1/registry/token?service=elsewhere&scope=repository:jil/busybox:pull', node)).json).toMatchObject({code: 'SERVICE_UNKNOWN'})
  })

  it('refuses an expired token and a revoked node', async () => {
    const tokenSigner = {key: await readFile(hqPath(t.dataDir, 'registryTokenKey'), 'utf8'), cert: await readFile(hqPath(t.dataDir, 'registryTokenCert'), 'utf8')}
    const past = new RegistryTokenIssuer(tokenSigner.key, tokenSigner.cert, new ManualClock(Date.now() - 3_600_000))
    const stale = past.issue({kind: 'node', id: 'CH-ZUG-01', zone: 'CH/FINMA', serial: 'x', notAfter: new Date()}, REGISTRY_SERVICE, [{type: 'repository', name: 'jil/busybox', actions: ['pull']}])
    expect((await pull(stale.token)).status).toBe(401)
    // The same issuer with the right time is accepted: the refusal above is the expiry.
    const fresh = new RegistryTokenIssuer(tokenSigner.key, tokenSigner.cert, new ManualClock(Date.now()))
    expect((await pull(fresh.issue({kind: 'node', id: 'CH-ZUG-01', zone: 'CH/FINMA', serial: 'x', notAfter: new Date()}, REGISTRY_SERVICE, [{type: 'repository', name: 'jil/busybox', actions: ['pull']}]).token)).status).toBe(200)
    await call('/v1/fleet/nodes/CH-ZUG-01', t.admin, 'DELETE', {reason: 'test'})
    const refused = await call(`/v1/registry/token?service=${REGISTRY_SERVICE}&scope=repository:jil/busybox:pull`, node)
    expect(refused).toMatchObject({status: 401, json: {code: 'CERT_REVOKED'}})
  })
})
