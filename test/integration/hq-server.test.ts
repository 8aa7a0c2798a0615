import {X509Certificate} from 'node:crypto'
import {readFile, stat} from 'node:fs/promises'
import {join} from 'node:path'

import {Agent, request} from 'undici'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {CertificateAuthority, createCa} from '../../src/hq/ca/ca.js'
import {hqPath} from '../../src/hq/datadir.js'
import {startHq} from '../../src/hq/server.js'
import {recordCertificate} from '../../src/hq/store/index.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {ManualClock, systemClock} from '../../src/shared/clock.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {certFingerprint, normalizeSerial} from '../../src/shared/pki.js'
import {pino} from 'pino'
import {startTestHq} from '../helpers/hq.js'

type Hq = Awaited<ReturnType<typeof startTestHq>>

/** A raw HTTPS call with an optional client identity, trusting HQ's CA. */
async function call(hq: Hq, path: string, id?: {cert: string; key: string}, init: {method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string>} = {}) {
  const agent = new Agent({connect: {ca: hq.admin.ca, ...(id ?? {})}})
  try {
    const res = await request(hq.hq.url + path, {method: init.method ?? 'GET', dispatcher: agent, ...(init.body !== undefined ? {body: init.body} : {}), headers: init.headers ?? {}})
    const text = await res.body.text()
    return {status: res.statusCode, type: String(res.headers['content-type']), text, json: () => JSON.parse(text) as Record<string, unknown>}
  } finally {
    await agent.close()
  }
}

describe('HQ over mutual TLS', () => {
  let hq: Hq
  let ca: CertificateAuthority

  beforeAll(async () => {
    hq = await startTestHq()
    ca = await CertificateAuthority.load(
      {certPem: await readFile(hqPath(hq.dataDir, 'caCert'), 'utf8'), keyPem: await readFile(hqPath(hq.dataDir, 'caKey'), 'utf8')},
      systemClock,
    )
  })
  afterAll(async () => hq?.stop())

  it('tells the admin who they are, through the one HQ client', async () => {
    const client = await HqClient.connect(hq.hq.url, hq.admin)
    const me = await client.whoami()
    await client.close()
    const cert = new X509Certificate(hq.admin.cert)
    expect(me).toEqual({kind: 'user', name: 'admin', role: 'admin', serial: normalizeSerial(cert.serialNumber), not_after: new Date(cert.validTo).toISOString()})
  })

  it('serves the CA anonymously, matching the fingerprint init printed', async () => {
    const res = await call(hq, '/v1/ca')
    expect(res.status).toBe(200)
    expect(certFingerprint(res.text)).toBe(hq.init.ca_fingerprint)
  })

  it('answers 401 problem+json to a request without a client certificate, even on unknown routes', async () => {
    for (const path of ['/v1/health', '/v1/whoami', '/metrics', '/v1/no-such-route']) {
      const res = await call(hq, path)
      expect(res.status, path).toBe(401)
      expect(res.type).toContain('application/problem+json')
      expect(res.json()).toMatchObject({status: 401, code: 'CLIENT_CERT_REQUIRED'})
    }
  })

  it('refuses a client certificate from another CA', async () => {
    const otherPair = await createCa(systemClock, 'someone else')
    const other = await CertificateAuthority.load(otherPair, systemClock)
    const mallory = await other.issueUser('admin', 'admin')
    const res = await call(hq, '/v1/whoami', {cert: mallory.pem, key: mallory.keyPem})
    expect(res.status).toBe(401)
    expect(res.json()).toMatchObject({code: 'CERT_UNTRUSTED'})
  })

  it('refuses an expired client certificate', async () => {
    const past = new ManualClock(Date.now() - 200 * 86_400_000)
    const oldCa = await CertificateAuthority.load(
      {certPem: await readFile(hqPath(hq.dataDir, 'caCert'), 'utf8'), keyPem: await readFile(hqPath(hq.dataDir, 'caKey'), 'utf8')},
      past,
    )
    const expired = await oldCa.issueUser('admin', 'admin', 90)
    await recordCertificate(hq.hq.db, {serial: expired.serial, kind: 'user', subject: 'admin', fingerprint: expired.fingerprint, not_before: expired.notBefore, not_after: expired.notAfter})
    const res = await call(hq, '/v1/whoami', {cert: expired.pem, key: expired.keyPem})
    expect(res.status).toBe(401)
    expect(res.json()).toMatchObject({code: 'CERT_EXPIRED'})
  })

  it('refuses a certificate of its CA that it has no record of, and a revoked one', async () => {
    const unrecorded = await ca.issueUser('admin', 'admin')
    expect((await call(hq, '/v1/whoami', {cert: unrecorded.pem, key: unrecorded.keyPem})).json()).toMatchObject({code: 'CERT_UNKNOWN'})

    const viewer = await ca.issueUser('vera', 'viewer')
    await hq.hq.db.transaction(async (tx) => {
      await tx.query("INSERT INTO users (name, role) VALUES ('vera', 'viewer')")
      await recordCertificate(tx, {serial: viewer.serial, kind: 'user', subject: 'vera', fingerprint: viewer.fingerprint, not_before: viewer.notBefore, not_after: viewer.notAfter})
    })
    const ok = await call(hq, '/v1/whoami', {cert: viewer.pem, key: viewer.keyPem})
    expect(ok.json()).toMatchObject({kind: 'user', name: 'vera', role: 'viewer'})
    await hq.hq.db.query('UPDATE certificates SET revoked_at = now() WHERE serial = $1', [viewer.serial])
    const res = await call(hq, '/v1/whoami', {cert: viewer.pem, key: viewer.keyPem})
    expect(res.status).toBe(401)
    expect(res.json()).toMatchObject({code: 'CERT_REVOKED'})
  })

  it('takes the role from its users table, not from the certificate', async () => {
    // A cert claiming admin for a user the database knows as viewer.
    const claim = await ca.issueUser('walt', 'admin')
    await hq.hq.db.transaction(async (tx) => {
      await tx.query("INSERT INTO users (name, role) VALUES ('walt', 'viewer')")
      await recordCertificate(tx, {serial: claim.serial, kind: 'user', subject: 'walt', fingerprint: claim.fingerprint, not_before: claim.notBefore, not_after: claim.notAfter})
    })
    expect((await call(hq, '/v1/whoami', claim && {cert: claim.pem, key: claim.keyPem})).json()).toMatchObject({name: 'walt', role: 'viewer'})
  })

  it('answers health and 404 as problem+json for an authenticated caller', async () => {
    const health = await call(hq, '/v1/health', hq.admin)
    expect(health.status).toBe(200)
    expect(health.json()).toMatchObject({status: 'ok', version: '0.0.0-test', database: 'pglite'})
    const missing = await call(hq, '/v1/nope', hq.admin)
    expect(missing.status).toBe(404)
    expect(missing.json()).toMatchObject({code: 'NOT_FOUND'})
  })

  it('counts requests and latencies in Prometheus text by route', async () => {
    await call(hq, '/v1/whoami', hq.admin)
    const res = await call(hq, '/metrics', hq.admin)
    expect(res.status).toBe(200)
    expect(res.text).toMatch(/jil_hq_http_requests_total\{method="GET",route="\/v1\/whoami",status="200"\} \d+/)
    expect(res.text).toMatch(/jil_hq_http_requests_total\{method="GET",route="\/v1\/health",status="401"\} \d+/)
    expect(res.text).toMatch(/jil_hq_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/v1\/whoami"\} \d+/)
  })

  it('keeps connections alive longer than the 60-second heartbeat', () => {
    expect(hq.hq.app.server.keepAliveTimeout).toBeGreaterThan(65_000)
  })

  it('says clearly when the client does not trust HQ (bundle of another HQ)', async () => {
    const other = await createCa(systemClock, 'other HQ')
    const client = await HqClient.connect(hq.hq.url, {...hq.admin, ca: other.certPem})
    await expect(client.whoami()).rejects.toMatchObject({code: 'HQ_UNTRUSTED'})
    await client.close()
  })

  it('refuses a second opener of its data dir', async () => {
    await expect(
      startHq({dataDir: hq.dataDir, listen: {host: '127.0.0.1', port: 0}, clock: systemClock, logger: pino({level: 'silent'}), version: 't'}),
    ).rejects.toMatchObject({code: 'DATA_DIR_LOCKED'})
  })

  it('keeps its keys private', async () => {
    for (const f of ['caKey', 'serverKey', 'signingKey', 'adminBundle', 'config'] as const) {
      expect((await stat(hqPath(hq.dataDir, f))).mode & 0o777, f).toBe(0o600)
    }
    expect((await stat(hq.dataDir)).mode & 0o777).toBe(0o700)
    expect(JSON.parse(await readFile(join(hq.dataDir, 'config.json'), 'utf8'))).toMatchObject({ca_fingerprint: hq.init.ca_fingerprint})
  })
})

describe('request validation', () => {
  let hq: Hq
  beforeAll(async () => {
    hq = await startTestHq()
  })
  afterAll(async () => hq?.stop())

  // HQ has no body-taking route yet at this stage; the error handling is the app's, so a
  // schema-declaring route is added to the real app for this test.
  it('answers malformed JSON with 400 BAD_JSON and a schema violation with 400 naming the field', async () => {
    const {buildHqApp} = await import('../../src/hq/app.js')
    const keys = {
      key: await readFile(hqPath(hq.dataDir, 'serverKey'), 'utf8'),
      cert: await readFile(hqPath(hq.dataDir, 'serverCert'), 'utf8'),
      ca: hq.admin.ca,
    }
    const app = await buildHqApp({db: hq.hq.db, ledger: hq.hq.ledger, clock: systemClock, logger: pino({level: 'silent'}), version: 't', caCertPem: hq.admin.ca, tls: keys})
    app.post(
      '/v1/echo',
      {config: {access: {any: true}}, schema: {body: {type: 'object', required: ['node_id'], properties: {node_id: {type: 'string', pattern: '^[A-Z]{2}-[A-Z]{3}-\\d{2}$'}}, additionalProperties: false}}},
      async (req) => req.body,
    )
    await app.listen({host: '127.0.0.1', port: 0})
    const url = `https://127.0.0.1:${(app.server.address() as {port: number}).port}`
    const local = {...hq, hq: {...hq.hq, url}} as Hq
    const json = {'content-type': 'application/json'}
    try {
      const bad = await call(local, '/v1/echo', hq.admin as UserBundle, {method: 'POST', body: '{"node_id": ', headers: json})
      expect(bad.status).toBe(400)
      expect(bad.json()).toMatchObject({code: 'BAD_JSON'})
      const missing = await call(local, '/v1/echo', hq.admin, {method: 'POST', body: '{}', headers: json})
      expect(missing.status).toBe(400)
      expect(missing.json()).toMatchObject({code: 'INVALID_BODY', field: 'node_id'})
      const wrong = await call(local, '/v1/echo', hq.admin, {method: 'POST', body: '{"node_id": "zurich"}', headers: json})
      expect(wrong.json()).toMatchObject({code: 'INVALID_BODY', field: 'node_id'})
      const extra = await call(local, '/v1/echo', hq.admin, {method: 'POST', body: '{"node_id": "CH-ZUG-01", "x": 1}', headers: json})
      expect(extra.json()).toMatchObject({code: 'INVALID_BODY', field: 'x'})
      const ok = await call(local, '/v1/echo', hq.admin, {method: 'POST', body: '{"node_id": "CH-ZUG-01"}', headers: json})
      expect(ok.status).toBe(200)
      // Without a client certificate the body is never looked at.
      expect((await call(local, '/v1/echo', undefined, {method: 'POST', body: '{', headers: json})).status).toBe(401)
    } finally {
      await app.close()
    }
  })
})
