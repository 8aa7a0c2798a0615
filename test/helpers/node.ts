import {join} from 'node:path'

import {pino} from 'pino'

import {HqClient} from '../../src/shared/hq-client.js'
import type {Heartbeat, HeartbeatService} from '../../src/shared/api.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {systemClock, type Clock} from '../../src/shared/clock.js'
import {initNode, joinNode, loadNodeIdentity} from '../../src/node/identity.js'
import {settingsFrom, type NodeSettings} from '../../src/node/settings.js'
import {createAgentContext} from '../../src/node/agents/run.js'
import type {Runtime} from '../../src/node/runtime.js'
import {tempDir} from './hq.js'

/** Hardware above HQ's default join minimums. */
export const TEST_HARDWARE = {machine_id: 'test-machine', cpu_cores: 4, memory_bytes: 8 * 1024 ** 3, disk_bytes: 100 * 1024 ** 3}

export const OPERATOR = 'Helvetia Nodes AG'

/** A user-side client for the test HQ (the admin bundle unless another is given). */
export function userClient(url: string, bundle: UserBundle): Promise<HqClient> {
  return HqClient.connect(url, {cert: bundle.cert, key: bundle.key, ca: bundle.ca})
}

/** Registers the test operator (KYC approved) once per HQ; a second call is harmless. */
export async function ensureOperator(client: HqClient): Promise<void> {
  await client.request('POST', '/v1/operators', {name: OPERATOR, kyc: 'approved'}).catch((err: {code?: string}) => {
    if (err.code !== 'OPERATOR_EXISTS') throw err
  })
}

export type TestNode = {nodeId: string; stateDir: string; cleanup: () => Promise<void>}

/**
 * A node admitted by the admin and joined to the test HQ for real (init: key + node.env; join: CSR,
 * pinned CA, signing keys), in a fresh state dir.
 */
export async function joinTestNode(hq: {url: string; caFingerprint: string}, admin: UserBundle, o: {nodeId: string; zone?: string; track?: 'devnet' | 'testnet' | 'mainnet'; clock?: Clock}): Promise<TestNode> {
  const tmp = await tempDir('jil-node-')
  const stateDir = join(tmp.dir, 'state')
  const client = await userClient(hq.url, admin)
  try {
    await ensureOperator(client)
    const admit = await client.request<{token: string}>('POST', '/v1/fleet/nodes', {node_id: o.nodeId, zone: o.zone ?? 'CH/FINMA', operator: OPERATOR, track: o.track ?? 'devnet'})
    await initNode({stateDir, nodeId: o.nodeId, region: 'test-region', jurisdiction: o.zone ?? 'CH/FINMA', hqUrl: hq.url, operator: OPERATOR})
    await joinNode({stateDir, token: admit.token, caFingerprint: hq.caFingerprint, clock: o.clock ?? systemClock, hardware: TEST_HARDWARE})
  } finally {
    await client.close()
  }
  return {nodeId: o.nodeId, stateDir, cleanup: tmp.cleanup}
}

/** A joined test node and a client with its own identity (mutual TLS), to post what its agent would. */
export type ConnectedNode = {node: TestNode; client: HqClient}

/** joinTestNode, then a client for the node's own identity. */
export async function connectTestNode(hq: {url: string; caFingerprint: string}, admin: UserBundle, o: Parameters<typeof joinTestNode>[2]): Promise<ConnectedNode> {
  const node = await joinTestNode(hq, admin, o)
  const identity = await loadNodeIdentity(node.stateDir)
  return {node, client: await HqClient.connect(hq.url, {cert: identity.certPem, key: identity.keyPem, ca: identity.caPem})}
}

/** Closes each node's client and removes its state dir. */
export async function closeTestNodes(nodes: Record<string, ConnectedNode>): Promise<void> {
  for (const n of Object.values(nodes)) {
    await n.client.close()
    await n.node.cleanup()
  }
}

/**
 * A heartbeat as a running node's agent sends it at `time`: the given services, one container (healthy
 * unless told otherwise), a calm system (disk at 10% unless told), a cert valid for `certValidMs` more.
 */
export function testHeartbeat(
  nodeId: string,
  time: Date,
  o: {services: HeartbeatService[]; containers?: Partial<Heartbeat['containers']>; diskPercent?: number; certValidMs: number; sync?: Heartbeat['sync']},
): Heartbeat {
  return {
    node_id: nodeId,
    time: time.toISOString(),
    agent_version: '0.0.0-test',
    run_mode: 'running',
    desired_sequence: 1,
    containers: {total: 1, running: 1, healthy: 1, unhealthy: 0, exited: 0, restarting: 0, other: 0, ...o.containers},
    services: o.services,
    system: {cpu_percent: 1, load1: 0.1, memory_used_bytes: 1e9, memory_total_bytes: 8e9, disk_used_bytes: 1e10, disk_total_bytes: 1e11, disk_percent: o.diskPercent ?? 10},
    cert: {serial: '01', not_after: new Date(time.getTime() + o.certValidMs).toISOString()},
    agents: {},
    ...(o.sync ? {sync: o.sync} : {}),
  }
}

/** An integration suite's shared state: its users (testUsers), its connected nodes, image digests by version, and `as(name)`, that user's client. */
export function suiteState(): {
  users: Record<string, {bundle: UserBundle; client: HqClient}>
  nodes: Record<string, ConnectedNode>
  digest: Record<string, string>
  as: (who: string) => HqClient
} {
  const users: Record<string, {bundle: UserBundle; client: HqClient}> = {}
  return {users, nodes: {}, digest: {}, as: (who) => users[who]!.client}
}

/**
 * An integration suite's teardown, in order: the nodes' clients and state, the users' clients, HQ,
 * its database, the temp dir. A part not set up (setup failed before it) is passed over.
 */
export async function closeSuite(o: {
  nodes: Record<string, ConnectedNode>
  users: Record<string, {client: HqClient}>
  hq: {stop: () => Promise<void>} | undefined
  pg: {drop: () => Promise<void>} | undefined
  tmp: {cleanup: () => Promise<void>} | undefined
}): Promise<void> {
  await closeTestNodes(o.nodes)
  for (const u of Object.values(o.users)) await u.client.close()
  await o.hq?.stop()
  await o.pg?.drop()
  await o.tmp?.cleanup()
}

/** Settings for a test node: the test engine, no jitter, healthz on a free port, overrides on top. */
export function testSettings(stateDir: string, env: Record<string, string> = {}): NodeSettings {
  return settingsFrom(stateDir, {JIL_DOCKER_HOST: process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST, JIL_HEALTHZ_LISTEN: '127.0.0.1:0', JIL_JITTER: '0s', JIL_DRAIN: '0s', ...env})
}

/** An agent context for a joined test node. Close it after use. */
export async function testAgentContext(node: TestNode, o: {clock?: Clock; env?: Record<string, string>; runtime?: Runtime; signal?: AbortSignal} = {}) {
  return createAgentContext({
    stateDir: node.stateDir,
    settings: testSettings(node.stateDir, o.env),
    clock: o.clock ?? systemClock,
    log: pino({level: 'silent'}),
    version: '0.0.0-test',
    ...(o.runtime ? {runtime: o.runtime} : {}),
    ...(o.signal ? {signal: o.signal} : {}),
  })
}

/** Agent contexts for the node a test file works on, all closed by `closeAll` (in afterEach). */
export function agentContexts(node: () => TestNode): {context: (o?: Parameters<typeof testAgentContext>[1]) => ReturnType<typeof testAgentContext>; closeAll: () => Promise<void>} {
  const open: {close(): Promise<void>}[] = []
  return {
    async context(o = {}) {
      const ctx = await testAgentContext(node(), o)
      open.push(ctx)
      return ctx
    },
    async closeAll() {
      for (const c of open.splice(0)) await c.close()
    },
  }
}
