import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {loadNodeIdentity} from '../../src/node/identity.js'
import type {AgentReport, FleetNode, FleetNodeDetail, Heartbeat, HeartbeatService} from '../../src/shared/api.js'
import {ManualClock} from '../../src/shared/clock.js'
import {HqClient} from '../../src/shared/hq-client.js'
import type {ImageManifest} from '../../src/shared/manifest.js'
import {startTestHq} from '../helpers/hq.js'
import {pushTinyImage} from '../helpers/images.js'
import {ensureOperator, joinTestNode, OPERATOR, userClient, type TestNode} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

function heartbeat(nodeId: string, services: HeartbeatService[]): Heartbeat {
  return {
    node_id: nodeId,
    time: new Date().toISOString(),
    agent_version: '0.0.0-test',
    run_mode: 'running',
    desired_sequence: 1,
    containers: {total: services.length, running: services.filter((s) => s.state === 'running').length, healthy: 0, unhealthy: 0, exited: 0, restarting: 0, other: 0},
    services,
    system: {cpu_percent: 12.5, load1: 0.4, memory_used_bytes: 2e9, memory_total_bytes: 8e9, disk_used_bytes: 40e9, disk_total_bytes: 100e9, disk_percent: 40},
    cert: {serial: '01', not_after: new Date(Date.now() + 30 * 86_400_000).toISOString()},
    agents: {health: {at: new Date().toISOString(), ok: true, summary: 'all healthy', critical: 0, warning: 0}},
  }
}

const svc = (name: string, o: Partial<HeartbeatService> = {}): HeartbeatService => ({name, critical: true, state: 'running', health: 'healthy', digest: `sha256:${'a'.repeat(64)}`, version: 'v1.0', ...o})

function report(nodeId: string, o: Partial<AgentReport> = {}): AgentReport {
  const at = new Date().toISOString()
  return {agent: 'update', node_id: nodeId, started_at: at, finished_at: at, ok: true, summary: '2 services up to date', findings: [], details: {sequence: 1, run_mode: 'running', actions: [], unresolved: []}, ...o}
}

const REGISTRY = process.env.JIL_TEST_REGISTRY

type Storage = {name: string; databaseUrl?: () => Promise<{url: string; drop: () => Promise<void>}>}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg', databaseUrl: freshPgDatabase}] : [])]

describe.each(storages)('heartbeats, reports and the node list on $name', (storage) => {
  // HQ's clock starts at the real time (TLS checks certificates against it) and is moved forward to age heartbeats.
  const clock = new ManualClock(new Date())
  let t: Awaited<ReturnType<typeof startTestHq>>
  let pg: {url: string; drop: () => Promise<void>} | undefined
  let admin: HqClient
  const joined: TestNode[] = []
  const clients: Record<string, HqClient> = {}
  const ids = storage.name === 'pg' ? {ch: 'CH-FLEETPG-01', sg: 'SG-FLEETPG-02', pending: 'US-FLEETPG-03'} : {ch: 'CH-FLEET-01', sg: 'SG-FLEET-02', pending: 'US-FLEET-03'}

  const list = async (q: string = '') => (await admin.request<{nodes: FleetNode[]}>('GET', `/v1/fleet/nodes${q}`)).nodes
  const node = async (id: string) => (await list()).find((n) => n.id === id)!

  beforeAll(async () => {
    pg = storage.databaseUrl ? await storage.databaseUrl() : undefined
    t = await startTestHq({clock, ...(REGISTRY ? {registry: REGISTRY} : {}), ...(pg ? {databaseUrl: pg.url} : {})})
    admin = await userClient(t.hq.url, t.admin)
    for (const [id, zone] of [[ids.ch, 'CH/FINMA'], [ids.sg, 'SG/MAS']] as const) {
      const n = await joinTestNode(t.hq, t.admin, {nodeId: id, zone, clock})
      joined.push(n)
      const identity = await loadNodeIdentity(n.stateDir)
      clients[id] = await HqClient.connect(t.hq.url, {cert: identity.certPem, key: identity.keyPem, ca: identity.caPem})
    }
    await ensureOperator(admin)
    await admin.request('POST', '/v1/fleet/nodes', {node_id: ids.pending, zone: 'US/FINCEN', operator: OPERATOR, track: 'devnet'})
  })
  afterAll(async () => {
    for (const c of Object.values(clients)) await c.close()
    await admin?.close()
    for (const n of joined) await n.cleanup()
    await t?.stop()
    await pg?.drop()
  })

  it('stores the latest heartbeat; lists nodes with derived status and heartbeat age; a node speaks only for itself', async () => {
    expect((await node(ids.ch)).status).toBe('offline') // joined, never heard from
    expect(await node(ids.pending)).toMatchObject({status: 'pending', joined_at: null, last_heartbeat_at: null, heartbeat_age_s: null, versions: {}})

    const received = await clients[ids.ch]!.heartbeat(heartbeat(ids.ch, [svc('api'), svc('worker', {critical: false, state: 'exited', health: 'none', version: null})]))
    expect(received.received_at).toBe(clock.now().toISOString())
    await expect(clients[ids.ch]!.heartbeat(heartbeat(ids.sg, []))).rejects.toMatchObject({status: 403, code: 'NODE_MISMATCH'})
    await expect(admin.heartbeat(heartbeat(ids.ch, []))).rejects.toMatchObject({status: 403, code: 'FORBIDDEN'})
    await expect(clients[ids.ch]!.request('POST', '/v1/node/heartbeat', {node_id: ids.ch})).rejects.toMatchObject({status: 400, code: 'INVALID_BODY'})

    // A non-critical service down does not degrade a node.
    expect(await node(ids.ch)).toMatchObject({
      id: ids.ch,
      zone: 'CH/FINMA',
      operator: OPERATOR,
      track: 'devnet',
      status: 'active',
      run_mode: 'running',
      heartbeat_age_s: 0,
      versions: {api: 'v1.0', worker: null},
      system: {disk_percent: 40},
      last_heartbeat_at: clock.now().toISOString(),
    })
    expect((await node(ids.ch)).cert_not_after).not.toBeNull()

    clock.advance(61_000)
    expect(await node(ids.ch)).toMatchObject({status: 'active', heartbeat_age_s: 61})
    clock.advance(119_000) // three intervals without a heartbeat
    expect(await node(ids.ch)).toMatchObject({status: 'offline', heartbeat_age_s: 180})
    await clients[ids.ch]!.heartbeat(heartbeat(ids.ch, [svc('api', {version: 'v1.1'})]))
    expect(await node(ids.ch)).toMatchObject({status: 'active', heartbeat_age_s: 0, versions: {api: 'v1.1'}})
  })

  it('marks a node degraded when a critical service is unhealthy or not running, paused or stopped by its run mode, revoked for good', async () => {
    await clients[ids.sg]!.heartbeat(heartbeat(ids.sg, [svc('api', {health: 'unhealthy'}), svc('db', {critical: false})]))
    expect((await node(ids.sg)).status).toBe('degraded')
    await clients[ids.sg]!.heartbeat(heartbeat(ids.sg, [svc('api', {state: 'restarting', health: 'starting'})]))
    expect((await node(ids.sg)).status).toBe('degraded')
    await clients[ids.sg]!.heartbeat(heartbeat(ids.sg, [svc('api', {health: 'starting'})]))
    expect((await node(ids.sg)).status).toBe('active')

    await t.hq.db.query("UPDATE nodes SET run_mode = 'paused' WHERE id = $1", [ids.sg])
    expect(await node(ids.sg)).toMatchObject({status: 'paused', run_mode: 'paused'})
    await t.hq.db.query("UPDATE nodes SET run_mode = 'stopped' WHERE id = $1", [ids.sg])
    expect((await node(ids.sg)).status).toBe('stopped')
    await t.hq.db.query("UPDATE nodes SET run_mode = 'running' WHERE id = $1", [ids.sg])
    await clients[ids.sg]!.heartbeat(heartbeat(ids.sg, [svc('api', {health: 'unhealthy'})]))

    // Filters: zone in either form, derived status, a running version.
    expect((await list('?zone=SG_MAS')).map((n) => n.id)).toEqual([ids.sg])
    expect((await list(`?zone=${encodeURIComponent('CH/FINMA')}`)).map((n) => n.id)).toEqual([ids.ch])
    expect((await list('?status=degraded')).map((n) => n.id)).toEqual([ids.sg])
    expect((await list('?status=pending')).map((n) => n.id)).toEqual([ids.pending])
    expect((await list('?version=v1.1')).map((n) => n.id)).toEqual([ids.ch])
    expect((await admin.fleetNodes({zone: 'JP/JFSA'})).nodes).toEqual([])
    await expect(list('?status=sleeping')).rejects.toMatchObject({status: 400, code: 'INVALID_QUERYSTRING'})
    await expect(list('?zone=switzerland')).rejects.toMatchObject({status: 400})
    // Nodes do not read the fleet.
    await expect(clients[ids.ch]!.fleetNodes()).rejects.toMatchObject({status: 403})
  })

  it('keeps the latest report per agent; an update that changed or failed something lands in the audit ledger as node.update', async () => {
    const c = clients[ids.ch]!
    await c.report(report(ids.ch)) // nothing to do: no entry
    await c.report(report(ids.ch, {agent: 'security', summary: '1 warning', details: {actions: [{service: 'x'}]}})) // not an update report: no entry
    const changed = report(ids.ch, {
      summary: '1 updated (api v1.0 → v1.1)',
      details: {sequence: 2, run_mode: 'running', actions: [{service: 'api', action: 'replace', from: {version: 'v1.0'}, to: {version: 'v1.1'}, outcome: 'ok'}], unresolved: []},
    })
    await c.report(changed)
    await c.report(report(ids.ch, {ok: false, summary: 'update could not run: Docker unreachable', error: {code: 'DOCKER_UNREACHABLE', message: 'connect ENOENT'}, details: {}}))
    await expect(c.report(report(ids.sg))).rejects.toMatchObject({status: 403, code: 'NODE_MISMATCH'})

    let entries: {actor: unknown; subject: string; details: Record<string, unknown>}[] = []
    for (let i = 0; i < 50 && entries.length < 2; i++) {
      entries = (await admin.auditPage({action: 'node.update'})).entries
      if (entries.length < 2) await new Promise((r) => setTimeout(r, 100))
    }
    // The sequencer places entries in commit order: the no-change report, committed first, would be here.
    expect(entries).toHaveLength(2)
    expect(entries.map((e) => e.actor)).toEqual([{type: 'node', id: ids.ch}, {type: 'node', id: ids.ch}])
    expect(entries.map((e) => e.subject)).toEqual([ids.ch, ids.ch])
    expect(entries.map((e) => e.details.summary).sort()).toEqual(['1 updated (api v1.0 → v1.1)', 'update could not run: Docker unreachable'])

    const detail = await admin.request<FleetNode & {reports: Record<string, AgentReport & {received_at: string}>}>('GET', `/v1/fleet/nodes/${ids.ch}`)
    expect(detail).toMatchObject({id: ids.ch, status: 'active'})
    expect(Object.keys(detail.reports).sort()).toEqual(['security', 'update'])
    expect(detail.reports.update).toMatchObject({ok: false, error: {code: 'DOCKER_UNREACHABLE'}, received_at: clock.now().toISOString()})
    await expect(admin.request('GET', '/v1/fleet/nodes/CH-NOPE-99')).rejects.toMatchObject({status: 404, code: 'NODE_UNKNOWN'})
  })

  // Signing needs the registry (HQ reads the digest there): the test services provide one.
  it.skipIf(!REGISTRY)('details the services of the last heartbeat with their signature status on the node\'s track, its agents, sync and config', async () => {
    // Three digests: signed onto devnet (the node's track), signed then deprecated, and one HQ never signed.
    await pushTinyImage('jil/fleet-nodes-api', 'v2.0')
    await pushTinyImage('jil/fleet-nodes-db', 'v1.0')
    const signed = await admin.request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/jil/fleet-nodes-api:v2.0`, version: 'v2.0', commit: 'abcdef0'})
    const withdrawn = await admin.request<ImageManifest>('POST', '/v1/images', {image: `${REGISTRY}/jil/fleet-nodes-db:v1.0`, version: 'v1.0', commit: 'abcdef0'})
    await admin.request('POST', `/v1/images/${withdrawn.digest}/deprecate`, {reason: 'bad build'})
    const unknown = await pushTinyImage('jil/fleet-nodes-cache', 'v0.1')
    expect(new Set([signed.digest, withdrawn.digest, unknown]).size).toBe(3)

    const hb: Heartbeat = {
      ...heartbeat(ids.ch, [
        svc('db', {digest: withdrawn.digest, version: 'v1.0', health: 'unhealthy', critical: false}),
        svc('api', {digest: signed.digest, version: 'v2.0'}),
        svc('cache', {digest: unknown, version: 'v0.1', state: 'exited', health: 'none', critical: false}),
        svc('worker', {digest: null, version: null, state: 'missing', health: 'none', critical: false}),
      ]),
      config_version: 0,
      agents: {health: {at: clock.now().toISOString(), ok: true, summary: '3/4 containers running', critical: 0, warning: 1}, security: {at: clock.now().toISOString(), ok: true, summary: '1 critical finding', critical: 1, warning: 0}},
      sync: {lag_s: 3.25, caught_up: false, outbox_backlog: 7, gaps: 0},
    }
    // Ingested through the node API, as the health agent sends it.
    await clients[ids.ch]!.heartbeat(hb)

    const d = await admin.fleetNode(ids.ch)
    expect(d.services).toEqual([
      {name: 'api', critical: true, state: 'running', health: 'healthy', digest: signed.digest, version: 'v2.0', signed: true, deprecated: false, image: 'jil/fleet-nodes-api'},
      {name: 'cache', critical: false, state: 'exited', health: 'none', digest: unknown, version: 'v0.1', signed: false, deprecated: false, image: null},
      {name: 'db', critical: false, state: 'running', health: 'unhealthy', digest: withdrawn.digest, version: 'v1.0', signed: false, deprecated: true, image: 'jil/fleet-nodes-db'},
      {name: 'worker', critical: false, state: 'missing', health: 'none', digest: null, version: null, signed: false, deprecated: false, image: null},
    ])
    expect(d.agents).toEqual(hb.agents)
    expect(d.containers).toEqual(hb.containers)
    expect(d.sync).toEqual(hb.sync)
    expect(d.heartbeat_cert).toEqual(hb.cert)
    expect(d.agent_version).toBe('0.0.0-test')
    // Desired vs applied config: HQ holds version 0 for a node nobody pushed config to, and so does the node.
    expect(d.config).toMatchObject({desired_version: 0, applied_version: 0})
    expect(d.state.applied).toMatchObject({run_mode: 'running', sequence: 1, config_version: 0})
    // The agents' full reports stay alongside.
    expect(Object.keys(d.reports).sort()).toEqual(['security', 'update'])

    // The list (and so the live stream's node rows) carries the sync block too; a node without one has null.
    expect((await node(ids.ch)).sync).toEqual(hb.sync)
    await clients[ids.ch]!.heartbeat(heartbeat(ids.ch, [svc('api', {digest: signed.digest, version: 'v2.0'})]))
    expect((await node(ids.ch)).sync).toBeNull()
    expect(await admin.fleetNode(ids.ch)).toMatchObject({services: [{name: 'api', signed: true}]})
  })

  it('details a node that never sent a heartbeat without services', async () => {
    const d = await admin.request<FleetNodeDetail>('GET', `/v1/fleet/nodes/${ids.pending}`)
    expect(d).toMatchObject({id: ids.pending, status: 'pending', sync: null, state: {applied: null, in_sync: null}})
    expect(d.services).toBeUndefined()
    expect(d.agents).toBeUndefined()
  })

  it('shows a revoked node as revoked', async () => {
    await admin.request('DELETE', `/v1/fleet/nodes/${ids.sg}`, {reason: 'decommissioned'})
    expect(await node(ids.sg)).toMatchObject({status: 'revoked', cert_not_after: null})
    await expect(clients[ids.sg]!.heartbeat(heartbeat(ids.sg, []))).rejects.toMatchObject({status: 401})
  })
})
