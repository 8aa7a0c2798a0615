import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import type {AgentName, AgentReport} from '../shared/api.js'
import {systemCode} from '../shared/errors.js'
import {fileError, writeFileAtomic} from '../shared/files.js'
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
  /** Held for a whole verify-and-reconcile (daemon tick, cron run, a fleet refresh never interleave). */
  updateLock: 'update.lock',
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
  await writeFileAtomic(join(stateDir, STATE_FILES.desired), JSON.stringify(doc, null, 2) + '\n', 0o644)
}
