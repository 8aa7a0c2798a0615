import {readFile} from 'node:fs/promises'

import type {Logger} from 'pino'

import type {Clock} from '../shared/clock.js'
import {JilError, systemCode} from '../shared/errors.js'
import {NODE_ID_PATTERN} from '../shared/ids.js'
import {openPg} from '../shared/db/pg.js'
import {nodePath, parseEnvFile} from '../node/config.js'
import {loadSettings} from '../node/settings.js'
import type {SyncSettings} from './config.js'
import {startSync, type SyncRunner, type SyncRunnerOptions} from './runner.js'
import {readSyncStatus, type SyncStatus} from './status.js'
import {openTransport, type KafkaIdentity} from './transports/index.js'

/**
 * Sync for the node in a state dir, as `jil node sync status` and `jil node sync run` need it: the
 * node id (node.env or JIL_NODE_ID) and the sync settings, with errors that say what to set.
 */
export async function nodeSyncContext(stateDir: string, env: NodeJS.ProcessEnv = process.env): Promise<{nodeId: string; sync: SyncSettings}> {
  let file: Record<string, string> = {}
  try {
    file = parseEnvFile(await readFile(nodePath(stateDir, 'env'), 'utf8'))
  } catch (err) {
    if (systemCode(err) !== 'ENOENT') throw err
  }
  const nodeId = env.JIL_NODE_ID || file.JIL_NODE_ID
  if (!nodeId || !NODE_ID_PATTERN.test(nodeId)) {
    throw new JilError('NODE_NOT_INITIALIZED', `no node id for ${stateDir}`, {hint: 'run jil node init (or set JIL_NODE_ID)'})
  }
  const settings = await loadSettings(stateDir, env)
  if (!settings.sync) {
    throw new JilError('SYNC_NOT_CONFIGURED', 'event sync is not configured on this node', {hint: 'set JIL_SYNC_TRANSPORT (kafka or postgres-log) and JIL_NODE_DATABASE_URL in node.env or the environment'})
  }
  return {nodeId, sync: settings.sync}
}

/** The node's mTLS identity for the brokers, when it has joined (else plaintext, for a local broker). */
export function brokerIdentity(stateDir: string): () => Promise<KafkaIdentity> {
  return async () => {
    const {loadNodeIdentity} = await import('../node/identity.js')
    try {
      const id = await loadNodeIdentity(stateDir)
      return {cert: id.certPem, key: id.keyPem, ca: id.caPem}
    } catch (err) {
      if (err instanceof JilError && err.code === 'NODE_NOT_JOINED') return undefined
      throw err
    }
  }
}

export type NodeSyncStatusResult = SyncStatus

/** `jil node sync status`: read from the node database and the bus, whether or not sync runs now. */
export async function nodeSyncStatus(o: {stateDir: string; clock: Clock; env?: NodeJS.ProcessEnv}): Promise<NodeSyncStatusResult> {
  const {nodeId, sync} = await nodeSyncContext(o.stateDir, o.env)
  const db = await openPg(sync.nodeDatabaseUrl, {max: 2, applicationName: 'jil-sync-status'})
  try {
    const known = await db.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'jil_sync_offsets' AND table_schema = current_schema()")
    if (known.rowCount === 0) {
      throw new JilError('SYNC_NOT_STARTED', `sync has never run against the node database of ${nodeId}`, {hint: 'start the daemon (or jil node sync run) with JIL_SYNC_TRANSPORT set'})
    }
    const transport = await openTransport(sync, sync.transport === 'kafka' ? brokerIdentity(o.stateDir) : undefined, `jil-status-${nodeId}`)
    try {
      return await readSyncStatus({db, transport, topics: sync.tables.map((t) => `jil.state.sync.${t.name}`), nodeId, clock: o.clock})
    } finally {
      await transport.close()
    }
  } finally {
    await db.close()
  }
}

/** `jil node sync run`: relay and applier in the foreground (the daemon runs the same when sync is on). */
export async function runNodeSync(o: {stateDir: string; clock: Clock; log: Logger; env?: NodeJS.ProcessEnv} & Pick<SyncRunnerOptions, 'beforeCommit' | 'statusEveryMs'>): Promise<SyncRunner & {nodeId: string}> {
  const {nodeId, sync} = await nodeSyncContext(o.stateDir, o.env)
  const runner = await startSync({
    settings: sync,
    nodeId,
    clock: o.clock,
    log: o.log,
    stateDir: o.stateDir,
    identity: brokerIdentity(o.stateDir),
    ...(o.beforeCommit ? {beforeCommit: o.beforeCommit} : {}),
    ...(o.statusEveryMs ? {statusEveryMs: o.statusEveryMs} : {}),
  })
  return {...runner, nodeId}
}
