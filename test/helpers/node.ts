import {join} from 'node:path'

import {pino} from 'pino'

import {HqClient} from '../../src/shared/hq-client.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {systemClock, type Clock} from '../../src/shared/clock.js'
import {initNode, joinNode} from '../../src/node/identity.js'
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
