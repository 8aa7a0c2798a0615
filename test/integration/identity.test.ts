import {cp, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {Agent, request} from 'undici'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {pino} from 'pino'

import {addUserOnline} from '../../src/cli/identity.js'
import {startHq} from '../../src/hq/server.js'
import {readBundle, type UserBundle} from '../../src/shared/bundle.js'
import {ManualClock} from '../../src/shared/clock.js'
import {newKeyAndCsr} from '../../src/shared/csr.js'
import {HqClient} from '../../src/shared/hq-client.js'
import {certInfo} from '../../src/shared/pki.js'
import {startTestHq, tempDir} from '../helpers/hq.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

type Hq = Awaited<ReturnType<typeof startTestHq>>
const HW = {machine_id: 'abc123', cpu_cores: 4, memory_bytes: 8 * 1024 ** 3, disk_bytes: 100 * 1024 ** 3}

/** A raw call with an identity (or none) and a private keep-alive agent the test can inspect. */
async function call(url: string, ca: string, path: string, o: {id?: {cert: string; key: string}; method?: 'GET' | 'POST' | 'DELETE'; body?: unknown; agent?: Agent} = {}) {
  const agent = o.agent ?? new Agent({connect: {ca, ...(o.id ?? {})}})
  try {
    const res = await request(url + path, {
      method: o.method ?? 'GET',
      dispatcher: agent,
      ...(o.body !== undefined ? {body: JSON.stringify(o.body), headers: {'content-type': 'application/json'}} : {}),
    })
    const text = await res.body.text()
    return {status: res.statusCode, json: () => JSON.parse(text) as any, text}
  } finally {
    if (!o.agent) await agent.close()
  }
}

async function userOf(t: Hq, dir: string, name: string, role: string): Promise<UserBundle> {
  const client = await HqClient.connect(t.hq.url, t.admin)
  try {
    const r = await addUserOnline(client, t.admin, name, role, join(dir, `${name}.json`))
    return readBundle(r.bundle)
  } finally {
    await client.close()
  }
}

/** Admits and joins a node the way `jil node join` does on the wire. */
async function joinNode(t: Hq, admin: UserBundle, id: string, o: {operator?: string; zone?: string; hw?: typeof HW} = {}) {
  const admit = await call(t.hq.url, admin.ca, '/v1/fleet/nodes', {id: admin, method: 'POST', body: {node_id: id, zone: o.zone ?? 'CH/FINMA', operator: o.operator ?? 'Helvetia Nodes AG'}})
  expect(admit.status, admit.text).toBe(200)
  const {keyPem, csrPem} = await newKeyAndCsr(id, `jil://node/${id}`)
  const join = await call(t.hq.url, admin.ca, '/v1/node/join', {method: 'POST', body: {token: admit.json().token, csr: csrPem, operator: o.operator ?? 'Helvetia Nodes AG', hardware: o.hw ?? HW}})
  return {token: admit.json().token as string, res: join, identity: join.status === 200 ? {cert: join.json().cert as string, key: keyPem} : undefined}
}

describe('identity and access at HQ', () => {
  let t: Hq
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let viewer: UserBundle
  let ci: UserBundle
  let ops: UserBundle
  let sec: UserBundle
  const clock = new ManualClock(new Date())

  beforeAll(async () => {
    t = await startTestHq({clock})
    tmp = await tempDir()
    viewer = await userOf(t, tmp.dir, 'vera', 'viewer')
    ci = await userOf(t, tmp.dir, 'ci-pipeline', 'ci-pipeline')
    ops = await userOf(t, tmp.dir, 'olga', 'ops-lead')
    sec = await userOf(t, tmp.dir, 'sam', 'security-lead')
    for (const [name, kyc] of [['Helvetia Nodes AG', 'approved'], ['Pending Ltd', 'pending']]) {
      const r = await call(t.hq.url, t.admin.ca, '/v1/operators', {id: sec, method: 'POST', body: {name, kyc}})
      expect(r.status, r.text).toBe(200)
    }
  })
  afterAll(async () => {
    await t?.stop()
    await tmp?.cleanup()
  })

  it('issues user bundles whose role HQ records and the certificate carries', async () => {
    expect(certInfo(ops.cert).principal).toEqual({kind: 'user', name: 'olga', role: 'ops-lead'})
    const who = await call(t.hq.url, ops.ca, '/v1/whoami', {id: ops})
    expect(who.json()).toMatchObject({name: 'olga', role: 'ops-lead'})
    const list = await call(t.hq.url, viewer.ca, '/v1/users', {id: viewer})
    expect(list.json().users.map((u: {name: string}) => u.name)).toEqual(['admin', 'ci-pipeline', 'olga', 'sam', 'vera'])
    const dup = await call(t.hq.url, t.admin.ca, '/v1/users', {id: t.admin, method: 'POST', body: {name: 'olga', role: 'admin', csr: (await newKeyAndCsr('olga', 'jil://user/olga')).csrPem}})
    expect(dup.json()).toMatchObject({status: 409, code: 'USER_EXISTS'})
  })

  it('decides every user route by the RBAC matrix: 403 names the missing permission', async () => {
    const revoke = await call(t.hq.url, viewer.ca, '/v1/fleet/nodes/CH-ZUG-99', {id: viewer, method: 'DELETE', body: {reason: 'x'}})
    expect(revoke.status).toBe(403)
    expect(revoke.json()).toMatchObject({code: 'FORBIDDEN', permission: 'nodes:revoke'})
    const admit = await call(t.hq.url, ci.ca, '/v1/fleet/nodes', {id: ci, method: 'POST', body: {node_id: 'CH-ZUG-98', zone: 'CH/FINMA', operator: 'Helvetia Nodes AG'}})
    expect(admit.json()).toMatchObject({status: 403, permission: 'nodes:admit'})
    const addUser = await call(t.hq.url, ops.ca, '/v1/users', {id: ops, method: 'POST', body: {name: 'x', role: 'admin', csr: 'x'.repeat(200)}})
    expect(addUser.json()).toMatchObject({status: 403, permission: 'users:manage'})
    // The body of a forbidden call is never parsed: RBAC runs first.
    const garbage = await call(t.hq.url, viewer.ca, '/v1/operators', {id: viewer, method: 'POST', body: undefined})
    expect(garbage.status).toBe(403)
  })

  it('admits and joins a node: token, KYC, hardware, CSR; the node then authenticates as itself', async () => {
    const {res, identity} = await joinNode(t, ops, 'CH-ZUG-01')
    expect(res.status, res.text).toBe(200)
    expect(res.json()).toMatchObject({node_id: 'CH-ZUG-01', zone: 'CH/FINMA', track: 'mainnet', operator: 'Helvetia Nodes AG', ca_fingerprint: t.init.ca_fingerprint})
    expect(res.json().signing_keys[0]).toMatchObject({key_id: t.init.signing_key_id})
    expect(certInfo(identity!.cert).principal).toEqual({kind: 'node', id: 'CH-ZUG-01', zone: 'CH/FINMA'})
    const who = await call(t.hq.url, t.admin.ca, '/v1/whoami', {id: identity})
    expect(who.json()).toMatchObject({kind: 'node', name: 'CH-ZUG-01', zone: 'CH/FINMA'})
    // A node may not call user routes.
    expect((await call(t.hq.url, t.admin.ca, '/v1/users', {id: identity})).status).toBe(403)
    const log = await auditOf(t, viewer, 'node.join')
    expect(log[0]).toMatchObject({actor: {type: 'node', id: 'CH-ZUG-01'}, subject: 'CH-ZUG-01', details: {zone: 'CH/FINMA', machine_id: 'abc123'}})
  })

  it('names the reason of every refused join', async () => {
    const used = await joinNode(t, ops, 'SG-MAS-01', {zone: 'SG/MAS'})
    expect(used.res.status).toBe(200)
    const {csrPem} = await newKeyAndCsr('SG-MAS-01', 'jil://node/SG-MAS-01')
    const again = await call(t.hq.url, t.admin.ca, '/v1/node/join', {method: 'POST', body: {token: used.token, csr: csrPem, operator: 'Helvetia Nodes AG', hardware: HW}})
    expect(again.json()).toMatchObject({code: 'TOKEN_USED'})

    const pending = await joinNode(t, ops, 'GB-LON-01', {zone: 'GB/FCA', operator: 'Pending Ltd'})
    expect(pending.res.json()).toMatchObject({code: 'KYC_NOT_APPROVED'})

    const small = await joinNode(t, ops, 'DE-FRA-01', {zone: 'DE/BAFIN', hw: {...HW, memory_bytes: 512 * 1024 ** 2}})
    expect(small.res.json()).toMatchObject({code: 'HARDWARE_BELOW_MINIMUM', detail: expect.stringContaining('memory')})

    // A token for one node id used with a CSR for another.
    const admit = await call(t.hq.url, ops.ca, '/v1/fleet/nodes', {id: ops, method: 'POST', body: {node_id: 'JP-TYO-01', zone: 'JP/JFSA', operator: 'Helvetia Nodes AG'}})
    const other = await newKeyAndCsr('JP-TYO-02', 'jil://node/JP-TYO-02')
    const mismatch = await call(t.hq.url, t.admin.ca, '/v1/node/join', {method: 'POST', body: {token: admit.json().token, csr: other.csrPem, operator: 'Helvetia Nodes AG', hardware: HW}})
    expect(mismatch.json()).toMatchObject({code: 'TOKEN_MISMATCH'})
    const wrongOperator = await call(t.hq.url, t.admin.ca, '/v1/node/join', {method: 'POST', body: {token: admit.json().token, csr: other.csrPem, operator: 'Pending Ltd', hardware: HW}})
    expect(wrongOperator.json()).toMatchObject({code: 'TOKEN_MISMATCH'})

    // A CSR not signed by the key it carries (its signature altered).
    const own = await newKeyAndCsr('JP-TYO-01', 'jil://node/JP-TYO-01')
    const der = Buffer.from(own.csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64')
    der[der.length - 5] = der[der.length - 5]! ^ 0xff
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`
    const bad = await call(t.hq.url, t.admin.ca, '/v1/node/join', {method: 'POST', body: {token: admit.json().token, csr: forged, operator: 'Helvetia Nodes AG', hardware: HW}})
    expect(bad.json()).toMatchObject({code: 'CSR_INVALID'})

    const unknown = await call(t.hq.url, t.admin.ca, '/v1/node/join', {method: 'POST', body: {token: 'jil_join_nonsense-token', csr: own.csrPem, operator: 'Helvetia Nodes AG', hardware: HW}})
    expect(unknown.json()).toMatchObject({status: 401, code: 'TOKEN_INVALID'})

    // Expired: HQ's clock moves past the token's ttl.
    const short = await call(t.hq.url, ops.ca, '/v1/fleet/nodes', {id: ops, method: 'POST', body: {node_id: 'IN-MUM-01', zone: 'IN/SEBI', operator: 'Helvetia Nodes AG', ttl_seconds: 60}})
    clock.advance(61_000)
    const late = await newKeyAndCsr('IN-MUM-01', 'jil://node/IN-MUM-01')
    const expired = await call(t.hq.url, t.admin.ca, '/v1/node/join', {method: 'POST', body: {token: short.json().token, csr: late.csrPem, operator: 'Helvetia Nodes AG', hardware: HW}})
    clock.advance(-61_000)
    expect(expired.json()).toMatchObject({code: 'TOKEN_EXPIRED'})

    const zone = await call(t.hq.url, ops.ca, '/v1/fleet/nodes', {id: ops, method: 'POST', body: {node_id: 'XX-NOW-01', zone: 'XX/NOWHERE', operator: 'Helvetia Nodes AG'}})
    expect(zone.json()).toMatchObject({code: 'ZONE_UNKNOWN'})
    // Nothing refused left an entry behind: only the two joins succeeded.
    const joins = await auditOf(t, viewer, 'node.join', 2)
    expect(joins.map((e: {subject: string}) => e.subject).sort()).toEqual(['CH-ZUG-01', 'SG-MAS-01'])
  })

  it('renews a node over mTLS with a fresh CSR', async () => {
    const {identity} = await joinNode(t, ops, 'AU-SYD-01', {zone: 'AU/ASIC'})
    const fresh = await newKeyAndCsr('AU-SYD-01', 'jil://node/AU-SYD-01')
    const r = await call(t.hq.url, t.admin.ca, '/v1/nodes/renew', {id: identity, method: 'POST', body: {csr: fresh.csrPem}})
    expect(r.status, r.text).toBe(200)
    const renewed = {cert: r.json().cert as string, key: fresh.keyPem}
    expect((await call(t.hq.url, t.admin.ca, '/v1/whoami', {id: renewed})).json()).toMatchObject({name: 'AU-SYD-01'})
    // A node cannot renew as another node.
    const other = await newKeyAndCsr('CH-ZUG-01', 'jil://node/CH-ZUG-01')
    expect((await call(t.hq.url, t.admin.ca, '/v1/nodes/renew', {id: renewed, method: 'POST', body: {csr: other.csrPem}})).json()).toMatchObject({code: 'CSR_INVALID'})
  })

  it('revokes a node: its live keep-alive socket is closed before the call returns, then 401 CERT_REVOKED; no renewal, no rejoin', async () => {
    const {identity} = await joinNode(t, ops, 'HK-HKG-01', {zone: 'HK/SFC'})
    const agent = new Agent({connect: {ca: t.admin.ca, ...identity!}, keepAliveTimeout: 60_000})
    expect((await call(t.hq.url, t.admin.ca, '/v1/whoami', {agent})).status).toBe(200)
    const serial = certInfo(identity!.cert).serial
    const registry = (t.hq as unknown as {app: {server: unknown}}).app
    expect(registry).toBeDefined()
    const sockets = await socketCount(t, serial)
    expect(sockets).toBe(1)
    const viewerTry = await call(t.hq.url, viewer.ca, '/v1/fleet/nodes/HK-HKG-01', {id: viewer, method: 'DELETE', body: {reason: 'x'}})
    expect(viewerTry.status).toBe(403)
    const r = await call(t.hq.url, sec.ca, '/v1/fleet/nodes/HK-HKG-01', {id: sec, method: 'DELETE', body: {reason: 'key compromise'}})
    expect(r.status, r.text).toBe(200)
    expect(r.json()).toMatchObject({node_id: 'HK-HKG-01', serials: [serial]})
    expect(await socketCount(t, serial)).toBe(0) // closed before the revoke call returned
    const after = await call(t.hq.url, t.admin.ca, '/v1/whoami', {agent})
    expect(after.status).toBe(401)
    expect(after.json()).toMatchObject({code: 'CERT_REVOKED'})
    await agent.close()
    const fresh = await newKeyAndCsr('HK-HKG-01', 'jil://node/HK-HKG-01')
    expect((await call(t.hq.url, t.admin.ca, '/v1/nodes/renew', {id: identity, method: 'POST', body: {csr: fresh.csrPem}})).json()).toMatchObject({code: 'CERT_REVOKED'})
    const readmit = await call(t.hq.url, ops.ca, '/v1/fleet/nodes', {id: ops, method: 'POST', body: {node_id: 'HK-HKG-01', zone: 'HK/SFC', operator: 'Helvetia Nodes AG'}})
    expect(readmit.json()).toMatchObject({code: 'NODE_REVOKED'})
    // The CRL lists it.
    const crl = await call(t.hq.url, t.admin.ca, '/v1/ca/crl?format=pem')
    expect(crl.text).toContain('-----BEGIN X509 CRL-----')
    const x509 = await import('@peculiar/x509')
    const parsed = new x509.X509Crl(crl.text.replace(/X509 CRL/g, 'X509 CRL'))
    expect(parsed.entries.map((e) => e.serialNumber.toLowerCase().replace(/^0+/, ''))).toContain(serial)
    const log = await auditOf(t, viewer, 'cert.revoke')
    expect(log[0]).toMatchObject({actor: {id: 'sam', role: 'security-lead'}, subject: 'HK-HKG-01', details: {reason: 'key compromise', kind: 'node'}})
  })

  it('lists every serial in the CRL when two nodes are revoked at once', async () => {
    const a = await joinNode(t, ops, 'KR-SEL-01', {zone: 'KR/FSC'})
    const b = await joinNode(t, ops, 'KR-SEL-02', {zone: 'KR/FSC'})
    await Promise.all(['KR-SEL-01', 'KR-SEL-02'].map((id) => call(t.hq.url, sec.ca, `/v1/fleet/nodes/${id}`, {id: sec, method: 'DELETE', body: {reason: 'batch'}})))
    const crl = await call(t.hq.url, t.admin.ca, '/v1/ca/crl?format=pem')
    const x509 = await import('@peculiar/x509')
    const serials = new x509.X509Crl(crl.text).entries.map((e) => e.serialNumber.toLowerCase().replace(/^0+/, ''))
    expect(serials).toEqual(expect.arrayContaining([certInfo(a.identity!.cert).serial, certInfo(b.identity!.cert).serial]))
  })

  it('admits again a node whose certificates have all expired, but not one holding a valid certificate', async () => {
    await joinNode(t, ops, 'BR-SAO-01', {zone: 'BR/CVM'})
    const again = await call(t.hq.url, ops.ca, '/v1/fleet/nodes', {id: ops, method: 'POST', body: {node_id: 'BR-SAO-01', zone: 'BR/CVM', operator: 'Helvetia Nodes AG'}})
    expect(again.json()).toMatchObject({status: 409, code: 'NODE_EXISTS'})
    clock.advance(31 * 86_400_000) // past the 30-day node certificate
    try {
      const readmit = await call(t.hq.url, ops.ca, '/v1/fleet/nodes', {id: ops, method: 'POST', body: {node_id: 'BR-SAO-01', zone: 'BR/CVM', operator: 'Helvetia Nodes AG'}})
      expect(readmit.status, readmit.text).toBe(200)
      expect(readmit.json().token).toMatch(/^jil_join_/)
    } finally {
      clock.advance(-31 * 86_400_000)
    }
  })

  it('revokes a user the same way, and never the last admin', async () => {
    const bob = await userOf(t, tmp.dir, 'bob', 'viewer')
    expect((await call(t.hq.url, bob.ca, '/v1/whoami', {id: bob})).status).toBe(200)
    const r = await call(t.hq.url, t.admin.ca, '/v1/users/bob', {id: t.admin, method: 'DELETE', body: {reason: 'left'}})
    expect(r.status, r.text).toBe(200)
    expect((await call(t.hq.url, bob.ca, '/v1/whoami', {id: bob})).json()).toMatchObject({code: 'CERT_REVOKED'})
    expect((await call(t.hq.url, t.admin.ca, '/v1/users/admin', {id: t.admin, method: 'DELETE', body: {}})).json()).toMatchObject({code: 'LAST_ADMIN'})
  })

  it('never locks out valid clients with an expired CRL (revocation is by serial in the request hook)', async () => {
    await t.hq.db.query("INSERT INTO crls (number, this_update, next_update, der) VALUES (100000, now() - interval '3 days', now() - interval '2 days', '\\x00')")
    expect((await call(t.hq.url, ops.ca, '/v1/whoami', {id: ops})).status).toBe(200)
  })
})

/** Audit entries of an action, once the sequencer has placed at least `min` of them. */
async function auditOf(t: Hq, who: UserBundle, action: string, min = 1): Promise<any[]> {
  for (let i = 0; ; i++) {
    const entries = (await call(t.hq.url, who.ca, `/v1/fleet/audit?action=${action}`, {id: who})).json().entries as any[]
    if (entries.length >= min || i > 50) return entries
    await new Promise((r) => setTimeout(r, 100))
  }
}

async function socketCount(t: Hq, serial: string): Promise<number> {
  const {SocketRegistry} = await import('../../src/hq/identity/revocation.js')
  void SocketRegistry
  return (t.hq as unknown as {sockets: {count(s: string): number}}).sockets.count(serial)
}

describe.runIf(hasPg)('two HQ replicas on one PostgreSQL', () => {
  it('stop serving a revoked certificate on the other replica within a second', async () => {
    const db = await freshPgDatabase()
    const t = await startTestHq({databaseUrl: db.url})
    const tmp = await tempDir()
    const dir2 = join(tmp.dir, 'replica')
    await cp(t.dataDir, dir2, {recursive: true})
    await rm(join(dir2, 'hq.lock'), {force: true})
    const second = await startHq({dataDir: dir2, listen: {host: '127.0.0.1', port: 0}, clock: new ManualClock(new Date()), logger: pino({level: 'silent'}), version: 't'})
    try {
      await call(t.hq.url, t.admin.ca, '/v1/operators', {id: t.admin, method: 'POST', body: {name: 'Helvetia Nodes AG', kyc: 'approved'}})
      const {identity} = await joinNode(t, t.admin, 'CA-TOR-01', {zone: 'CA/OSC'})
      const agent = new Agent({connect: {ca: t.admin.ca, ...identity!}, keepAliveTimeout: 60_000})
      expect((await call(second.url, t.admin.ca, '/v1/whoami', {agent})).status).toBe(200)
      const serial = certInfo(identity!.cert).serial
      expect((second as unknown as {sockets: {count(s: string): number}}).sockets.count(serial)).toBe(1)
      await call(t.hq.url, t.admin.ca, '/v1/fleet/nodes/CA-TOR-01', {id: t.admin, method: 'DELETE', body: {reason: 'test'}})
      const t0 = Date.now()
      while ((second as unknown as {sockets: {count(s: string): number}}).sockets.count(serial) > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50))
      expect((second as unknown as {sockets: {count(s: string): number}}).sockets.count(serial)).toBe(0)
      expect((await call(second.url, t.admin.ca, '/v1/whoami', {agent})).json()).toMatchObject({code: 'CERT_REVOKED'})
      await agent.close()
    } finally {
      await second.close()
      await t.stop()
      await tmp.cleanup()
      await db.drop()
    }
  })
})

void readFile
