import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import type {Logger} from 'pino'

import {runDaemon, type RunningDaemon} from '../daemon/daemon.js'
import {nodePath, quoteEnvValue, readNodeEnv, writeNodeEnv} from '../node/config.js'
import type {HardwareReport} from '../node/hardware.js'
import {initNode, joinNode, loadNodeIdentity, type NodeIdentityFile} from '../node/identity.js'
import type {Runtime} from '../node/runtime.js'
import {loadSettings} from '../node/settings.js'
import {readLastReport} from '../node/state.js'
import type {Clock} from '../shared/clock.js'
import {JilError} from '../shared/errors.js'
import {exists, writeFileAtomic} from '../shared/files.js'
import type {HqClient} from '../shared/hq-client.js'
import {DEV_OPERATOR, type DevNode} from './plan.js'

/**
 * The node side of `jil dev`: each simulated node is a real node state dir (D/nodes/<id>) made by
 * `node init` and `node join` (its own key, a CSR, a certificate from HQ's CA, the pinned CA and
 * signing keys), and a real daemon instance (runDaemon) in this process, with its own mTLS client.
 */

export type JoinOutcome = 'joined' | 'rejoined' | 'existing' | 'revoked'

/**
 * Makes sure the node has joined. A node with an identity keeps it (its certificate renews itself);
 * one whose certificate has expired (the dev fleet was off for a month) is admitted and joins again.
 * A node HQ revoked stays revoked: `revoked`, and it is not started.
 */
export async function ensureJoined(o: {node: DevNode; stateDir: string; url: string; caFingerprint: string; ops: HqClient; hardware: HardwareReport; clock: Clock}): Promise<JoinOutcome> {
  let rejoin = false
  if (await exists(nodePath(o.stateDir, 'identity'))) {
    const id = await loadNodeIdentity(o.stateDir)
    if (id.identity.hq_url !== o.url) await repointNode(o.stateDir, o.url)
    if (id.cert.notAfter.getTime() > o.clock.now().getTime()) return 'existing'
    rejoin = true
  } else {
    const init = {stateDir: o.stateDir, nodeId: o.node.id, region: o.node.region, jurisdiction: o.node.zone, hqUrl: o.url, operator: DEV_OPERATOR}
    await initNode(init).catch((err: unknown) => {
      // Initialised for another HQ URL by an earlier run that stopped before the join: not joined, so nothing is lost.
      if (err instanceof JilError && err.code === 'NODE_EXISTS') return initNode({...init, force: true})
      throw err
    })
  }
  let token: string
  try {
    ;({token} = await o.ops.request<{token: string}>('POST', '/v1/fleet/nodes', {node_id: o.node.id, zone: o.node.zone, operator: DEV_OPERATOR, track: o.node.track, ttl_seconds: 600}))
  } catch (err) {
    if (err instanceof JilError && err.code === 'NODE_REVOKED') return 'revoked'
    throw err
  }
  // 20 simulated nodes share this machine: each reports it with its own machine id, so HQ can tell them apart.
  await joinNode({stateDir: o.stateDir, token, caFingerprint: o.caFingerprint, hqUrl: o.url, clock: o.clock, hardware: {...o.hardware, machine_id: `${o.hardware.machine_id}/${o.node.id}`}})
  return rejoin ? 'rejoined' : 'joined'
}

/** HQ moved to another port since the last run: the node's recorded URL follows (identity.json and node.env). */
async function repointNode(stateDir: string, url: string): Promise<void> {
  const idPath = nodePath(stateDir, 'identity')
  const identity = JSON.parse(await readFile(idPath, 'utf8')) as NodeIdentityFile
  await writeFileAtomic(idPath, JSON.stringify({...identity, hq_url: url}, null, 2) + '\n', 0o644)
  const env = await readNodeEnv(stateDir)
  await writeNodeEnv(stateDir, {...env, JIL_HQ_URL: url})
}

/** The first line of the block `jil dev` keeps at the end of each node's node.env. */
export const DEV_SETTINGS_MARKER = '# --- jil dev: settings of this simulated node (rewritten at every start) ---'

/**
 * Writes the dev settings into node.env below the node's own values (which `node init` wrote and
 * which stay as they are), so the daemon here and `jil node sync status --state-dir …`, `jil agent
 * run … --state-dir …` from another terminal read the same settings. 0600 when they hold a password.
 */
export async function writeDevSettings(stateDir: string, values: Readonly<Record<string, string>>): Promise<void> {
  const path = nodePath(stateDir, 'env')
  const text = await readFile(path, 'utf8')
  const at = text.indexOf(DEV_SETTINGS_MARKER)
  const own = (at < 0 ? text : text.slice(0, at)).replace(/\n*$/, '\n')
  const lines = Object.entries(values).map(([k, v]) => `${k}=${quoteEnvValue(v)}`)
  const secret = Object.values(values).some((v) => /^postgres(ql)?:\/\/[^/@]*:[^/@]*@/.test(v))
  await writeFileAtomic(path, `${own}\n${DEV_SETTINGS_MARKER}\n${lines.join('\n')}\n`, secret ? 0o600 : 0o644)
}

/** Short schedules, so a demo shows change within seconds; JIL_DRAIN 0 so Ctrl-C does not wait for a load balancer. */
export const DEV_SCHEDULE: Readonly<Record<string, string>> = {
  JIL_HEALTHZ_LISTEN: '127.0.0.1:0',
  JIL_HEALTH_EVERY: '15s',
  JIL_UPDATE_EVERY: '1m',
  JIL_SECURITY_EVERY: '30m',
  JIL_JITTER: '2s',
  JIL_DRAIN: '0s',
  JIL_UPDATE_HEALTH_TIMEOUT: '60s',
}

/** Starts the node's daemon in this process with the settings its node.env now holds (the process environment is not consulted). */
export async function startNodeDaemon(o: {stateDir: string; runtime: Runtime; clock: Clock; log: Logger; version: string}): Promise<RunningDaemon> {
  const settings = await loadSettings(o.stateDir, {})
  return runDaemon({stateDir: o.stateDir, settings, clock: o.clock, log: o.log, version: o.version, runtime: o.runtime})
}

export function nodeStateDir(nodesDir: string, nodeId: string): string {
  return join(nodesDir, nodeId)
}

/**
 * Once the daemon's first update run has brought the node's services up, a health run at once: HQ
 * then shows what the node runs within seconds of the start, not at the next scheduled heartbeat.
 * Gives up quietly after `timeoutMs`, or when `signal` aborts (the fleet is stopping).
 */
export async function heartbeatAfterFirstUpdate(o: {stateDir: string; daemon: RunningDaemon; since: Date; signal: AbortSignal; timeoutMs?: number}): Promise<void> {
  const end = Date.now() + (o.timeoutMs ?? 180_000)
  while (!o.signal.aborted && Date.now() < end) {
    const r = await readLastReport(o.stateDir, 'update').catch(() => undefined)
    if (r && Date.parse(r.finished_at) >= o.since.getTime()) {
      // A health run already going may have looked before the services were up: the next one, then.
      const done = await o.daemon.runNow('health').catch(() => ({ran: false as const, reason: 'failed'}))
      if (done.ran || done.reason !== 'busy') return
    }
    await sleep(500, undefined, {signal: o.signal}).catch(() => {})
  }
}
