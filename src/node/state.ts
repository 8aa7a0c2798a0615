import {readFile} from 'node:fs/promises'
import {setTimeout as sleep} from 'node:timers/promises'
import {join} from 'node:path'

import type {AgentName, AgentReport} from '../shared/api.js'
import {JilError, systemCode} from '../shared/errors.js'
import {fileError, lockFile, writeFileAtomic, type FileLock} from '../shared/files.js'
import type {DesiredState} from '../shared/stack.js'

/**
 * What the agents keep in the node's state dir between runs (cron runs are separate processes):
 * the last result of each agent, the desired state last applied (its sequence guards against
 * replay), and small agent-private records (restart budget, manifest cache).
 */
export const STATE_FILES = {
  /** agents/<name>.json: the last AgentReport of each agent. */
  agentsDir: 'agents',
  /** The last desired state the node verified and applied. */
  desired: 'desired-state.json',
  /** manifests/<digest>.json: the signed manifests of digests the node runs (offline verification). */
  manifestsDir: 'manifests',
  /** HQ's CRL as last fetched (PEM), for checking approvers' and rollback signers' certificates. */
  crl: 'crl.pem',
  /** Held while an agent changes the node's containers (lockContainers). */
  containersLock: 'containers.lock',
  /** Event sync's latest status, written by the sync runner every few seconds (the heartbeat's sync block). */
  syncStatus: 'sync-status.json',
} as const

async function readJson<T>(path: string, what: string): Promise<T | undefined> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (systemCode(err) === 'ENOENT') return undefined
    throw fileError(path, what, err)
  }
  try {
    return JSON.parse(text) as T
  } catch {
    // A damaged record is as good as none: the next run writes a fresh one.
    return undefined
  }
}

export function agentResultPath(stateDir: string, agent: AgentName): string {
  return join(stateDir, STATE_FILES.agentsDir, `${agent}.json`)
}

export async function readLastReport(stateDir: string, agent: AgentName): Promise<AgentReport | undefined> {
  return readJson<AgentReport>(agentResultPath(stateDir, agent), `${agent} agent result`)
}

export async function writeLastReport(stateDir: string, report: AgentReport): Promise<void> {
  await writeFileAtomic(agentResultPath(stateDir, report.agent), JSON.stringify(report, null, 2) + '\n', 0o644)
}

/** A private record of one agent, e.g. agents/health-restarts.json. */
export async function readAgentRecord<T>(stateDir: string, name: string): Promise<T | undefined> {
  return readJson<T>(join(stateDir, STATE_FILES.agentsDir, `${name}.json`), name)
}

export async function writeAgentRecord(stateDir: string, name: string, value: unknown): Promise<void> {
  await writeFileAtomic(join(stateDir, STATE_FILES.agentsDir, `${name}.json`), JSON.stringify(value, null, 2) + '\n', 0o644)
}

export async function readAppliedDesiredState(stateDir: string): Promise<DesiredState | undefined> {
  return readJson<DesiredState>(join(stateDir, STATE_FILES.desired), 'desired state')
}

export async function writeAppliedDesiredState(stateDir: string, doc: DesiredState): Promise<void> {
  // 0600: it carries every service's env, often credentials.
  await writeFileAtomic(join(stateDir, STATE_FILES.desired), JSON.stringify(doc, null, 2) + '\n', 0o600)
}

/**
 * One agent at a time changes the node's containers: the update agent for a whole verify-and-reconcile
 * (daemon tick, cron run and a fleet refresh never interleave its renames) and the health agent while
 * it restarts (so it never restarts a container an update has set aside or a stop has stopped). Busy
 * is CONTAINERS_BUSY, naming the holder in details.holder ('update' or 'health').
 */
export function lockContainers(stateDir: string, holder: 'update' | 'health'): Promise<FileLock> {
  return lockFile(join(stateDir, STATE_FILES.containersLock), holder, (other) =>
    new JilError('CONTAINERS_BUSY', `the ${other.holder} agent (pid ${other.pid}) is changing the node's containers`, {hint: 'wait for it to finish', details: {holder: other.holder}}),
  )
}

/**
 * lockContainers, waiting while the lock is busy: up to `waitMs`, and only while `waitFor(holder)`
 * says the holder is worth waiting for (default: any). Then the CONTAINERS_BUSY error stands.
 */
export async function lockContainersWhenFree(
  stateDir: string,
  holder: 'update' | 'health',
  o: {waitMs: number; signal: AbortSignal; waitFor?: (holder: unknown) => boolean; pollMs?: number},
): Promise<FileLock> {
  const pollMs = o.pollMs ?? 250
  for (let waited = 0; ; waited += pollMs) {
    try {
      return await lockContainers(stateDir, holder)
    } catch (err) {
      if (!(err instanceof JilError && err.code === 'CONTAINERS_BUSY')) throw err
      if (waited >= o.waitMs || o.signal.aborted || !(o.waitFor?.(err.details?.holder) ?? true)) throw err
      await sleep(pollMs, undefined, {signal: o.signal}).catch(() => {})
    }
  }
}

/** A sync status older than this means the runner is not running: the heartbeat then says not caught up. */
const SYNC_STATUS_FRESH_MS = 120_000

/** The heartbeat's sync block from the runner's last status; undefined when sync never wrote one. */
export async function readSyncHeartbeat(stateDir: string, now: Date): Promise<{lag_s: number; caught_up: boolean; outbox_backlog?: number; gaps?: number} | undefined> {
  const s = await readJson<{caught_up?: unknown; lag_s?: unknown; outbox_backlog?: unknown; gaps?: unknown; written_at?: unknown}>(join(stateDir, STATE_FILES.syncStatus), 'sync status')
  if (!s || typeof s.written_at !== 'string' || typeof s.lag_s !== 'number') return undefined
  const age = now.getTime() - Date.parse(s.written_at)
  const fresh = age >= 0 && age < SYNC_STATUS_FRESH_MS
  return {
    caught_up: fresh && s.caught_up === true,
    lag_s: fresh ? s.lag_s : Math.max(s.lag_s, Math.round(age / 1000)),
    ...(typeof s.outbox_backlog === 'number' ? {outbox_backlog: s.outbox_backlog} : {}),
    ...(typeof s.gaps === 'number' ? {gaps: s.gaps} : {}),
  }
}
