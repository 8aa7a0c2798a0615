import type {AgentReport, FleetNode, FleetNodeDetail, Heartbeat, NodeServiceView, NodeStatus} from '../../shared/api.js'
import {canonicalJson} from '../../shared/canonical.js'
import type {Clock} from '../../shared/clock.js'
import type {Db} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {effectiveConfigRefs} from './config.js'
import {HeartbeatIngester} from './heartbeats.js'

/** Nodes heartbeat every 60 s; three missed ones make a node offline. */
export const HEARTBEAT_INTERVAL_MS = 60_000
export const OFFLINE_AFTER_MS = 3 * HEARTBEAT_INTERVAL_MS

/**
 * Where the update agent's details say it did or tried something: `actions` (each a create, replace,
 * start, stop, restore or remove, ok, failed or refused) and `refused` (a desired state it refused).
 */
const UPDATE_CHANGE_KEYS = ['actions', 'refused'] as const

/** Audit details stay small: a bigger update report keeps its summary and leaves the rest to the node's stored report. */
const MAX_AUDIT_DETAILS = 16 * 1024

export type NodeRow = {
  id: string
  zone: string
  operator: string
  track: string
  status: 'pending' | 'active' | 'revoked'
  run_mode: string
  joined_at: Date | null
  last_heartbeat_at: Date | null
  heartbeat: Heartbeat | null
  cert_not_after: Date | null
  /** An open rollout is moving the node (upgrading or reverting) now. */
  upgrading: boolean | null
}

/**
 * A node's status, derived from what HQ knows (never stored loosely), in order: revoked; pending
 * (admitted, never joined); offline (no heartbeat for three intervals, or never: a dead paused
 * node is offline, not paused); paused/stopped (its run mode); upgrading (a rollout is moving it now); degraded (its last heartbeat shows a critical service not running or
 * unhealthy); else active.
 */
export function deriveStatus(n: Pick<NodeRow, 'status' | 'joined_at' | 'run_mode' | 'last_heartbeat_at' | 'heartbeat'> & {upgrading?: boolean | null}, now: Date): NodeStatus {
  if (n.status === 'revoked') return 'revoked'
  if (n.status === 'pending' || !n.joined_at) return 'pending'
  if (!n.last_heartbeat_at || now.getTime() - n.last_heartbeat_at.getTime() >= OFFLINE_AFTER_MS) return 'offline'
  if (n.run_mode === 'paused' || n.run_mode === 'stopped') return n.run_mode
  if (n.upgrading) return 'upgrading'
  if (n.heartbeat?.services.some((s) => s.critical && (s.state !== 'running' || s.health === 'unhealthy'))) return 'degraded'
  return 'active'
}

export function toFleetNode(n: NodeRow, now: Date): FleetNode {
  const versions: Record<string, string | null> = {}
  for (const s of n.heartbeat?.services ?? []) versions[s.name] = s.version
  return {
    id: n.id,
    zone: n.zone,
    operator: n.operator,
    track: n.track,
    status: deriveStatus(n, now),
    run_mode: n.run_mode,
    joined_at: n.joined_at?.toISOString() ?? null,
    last_heartbeat_at: n.last_heartbeat_at?.toISOString() ?? null,
    heartbeat_age_s: n.last_heartbeat_at ? Math.max(0, Math.floor((now.getTime() - n.last_heartbeat_at.getTime()) / 1000)) : null,
    versions,
    cert_not_after: n.cert_not_after?.toISOString() ?? null,
    system: n.heartbeat?.system ?? null,
    sync: n.heartbeat?.sync ?? null,
  }
}

/** An update report worth an audit entry: the run failed, or it changed, or tried and failed to change, something. */
export function isUpdateChange(r: AgentReport): boolean {
  if (r.agent !== 'update') return false
  if (!r.ok || r.error) return true
  return UPDATE_CHANGE_KEYS.some((k) => {
    const v = r.details[k]
    return (Array.isArray(v) && v.length > 0) || (typeof v === 'number' && v > 0) || v === true || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length > 0)
  })
}

export type FleetFilter = {zone?: string | undefined; status?: NodeStatus | undefined; version?: string | undefined; ids?: readonly string[] | undefined}

export type NodeDetail = FleetNodeDetail

// One statement for the whole list: nodes, their latest heartbeat and their newest live certificate.
const LIST_SQL = `
  SELECT n.id, n.zone, n.operator, n.track, n.status, n.run_mode, n.joined_at,
         h.received_at AS last_heartbeat_at, h.body AS heartbeat, c.not_after AS cert_not_after, u.upgrading
    FROM nodes n
    LEFT JOIN node_heartbeats h ON h.node_id = n.id
    LEFT JOIN LATERAL (SELECT true AS upgrading FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id
                        WHERE rn.node_id = n.id AND rn.state IN ('upgrading', 'reverting') AND r.state IN ('running', 'paused', 'reverting') LIMIT 1) u ON true
    LEFT JOIN (SELECT subject, max(not_after) AS not_after FROM certificates WHERE kind = 'node' AND revoked_at IS NULL GROUP BY subject) c ON c.subject = n.id`

/**
 * The fleet as HQ sees it: the latest heartbeat and agent reports of each node, and the node list
 * with derived status. An update report that changed something lands in the audit ledger in the
 * same transaction that stores it.
 */
export class FleetService {
  constructor(
    private readonly db: Db,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
  ) {}

  async recordHeartbeat(p: Principal, hb: Heartbeat): Promise<{received_at: string}> {
    const nodeId = this.caller(p, hb.node_id, 'heartbeat')
    const now = this.clock.now()
    // Batched with the rest of the fleet's heartbeats; resolves once its batch has committed (a 200 means stored).
    await HeartbeatIngester.of(this.db).submit(nodeId, now, hb)
    return {received_at: now.toISOString()}
  }

  async recordReport(p: Principal, report: AgentReport): Promise<{received_at: string}> {
    const nodeId = this.caller(p, report.node_id, 'report')
    const now = this.clock.now()
    await this.db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO node_reports (node_id, agent, received_at, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (node_id, agent) DO UPDATE SET received_at = EXCLUDED.received_at, body = EXCLUDED.body`,
        [nodeId, report.agent, now, JSON.stringify(report)],
      )
      if (isUpdateChange(report)) {
        const details = {ok: report.ok, summary: report.summary, started_at: report.started_at, finished_at: report.finished_at, ...(report.error ? {error: report.error} : {}), details: report.details}
        const small = canonicalJson(details).length <= MAX_AUDIT_DETAILS ? details : {...details, details: {truncated: true}}
        await this.ledger.append(tx, {actor: {type: 'node', id: nodeId}, action: 'node.update', subject: nodeId, details: small})
      }
    })
    return {received_at: now.toISOString()}
  }

  /** `GET /v1/fleet/nodes`: status and version are derived, so they filter after the one query. */
  async listNodes(filter: FleetFilter, now: Date = this.clock.now()): Promise<FleetNode[]> {
    const {rows} = await this.db.query<NodeRow>(`${LIST_SQL} WHERE ($1::text IS NULL OR n.zone = $1) AND ($2::text[] IS NULL OR n.id = ANY($2::text[])) ORDER BY n.id`, [filter.zone ?? null, filter.ids ?? null])
    return rows
      .map((r) => toFleetNode(r, now))
      .filter((n) => (filter.status === undefined || n.status === filter.status) && (filter.version === undefined || Object.values(n.versions).includes(filter.version)))
  }

  /** `GET /v1/fleet/nodes/:id`: the node as listed, with the latest report of each agent. */
  async getNode(id: string, now: Date = this.clock.now()): Promise<NodeDetail> {
    const {rows} = await this.db.query<NodeRow>(`${LIST_SQL} WHERE n.id = $1`, [id])
    const row = rows[0]
    if (!row) throw new JilError('NODE_UNKNOWN', `no node ${id}`, {status: 404, hint: 'see jil fleet nodes'})
    const {rows: reports} = await this.db.query<{agent: AgentReport['agent']; received_at: Date; body: AgentReport}>('SELECT agent, received_at, body FROM node_reports WHERE node_id = $1 ORDER BY agent', [id])
    // Desired: the run mode and config HQ holds now, and the sequence of the document it last issued
    // (the next fetch issues a higher one if the content changed since). Applied: the node's heartbeat.
    const {rows: want} = await this.db.query<{config_version: number; sequence: string | number | null}>(
      'SELECT n.config_version, s.sequence FROM nodes n LEFT JOIN desired_state_sequences s ON s.node_id = n.id WHERE n.id = $1',
      [id],
    )
    const desired = {run_mode: row.run_mode, config_version: want[0]?.config_version ?? 0, sequence: want[0]?.sequence == null ? null : Number(want[0].sequence)}
    // A node too old to report its config version has applied none (0).
    const applied = row.heartbeat && row.last_heartbeat_at
      ? {run_mode: row.heartbeat.run_mode, sequence: row.heartbeat.desired_sequence, config_version: row.heartbeat.config_version ?? 0, at: row.last_heartbeat_at.toISOString()}
      : null
    const hb = row.heartbeat
    return {
      ...toFleetNode(row, now),
      ...(hb
        ? {
            services: await this.servicesOf(hb, row.track),
            containers: hb.containers,
            agents: hb.agents,
            ...(hb.consensus ? {consensus: hb.consensus} : {}),
            agent_version: hb.agent_version,
            heartbeat_cert: hb.cert,
          }
        : {}),
      reports: Object.fromEntries(reports.map((r) => [r.agent, {...r.body, received_at: r.received_at.toISOString()}])),
      state: {
        desired,
        applied,
        in_sync: applied ? applied.run_mode === desired.run_mode && applied.sequence === desired.sequence && applied.config_version === desired.config_version : null,
      },
      config: {desired_version: desired.config_version, applied_version: applied?.config_version ?? null, desired: await effectiveConfigRefs(this.db, id, row.zone)},
    }
  }

  /**
   * The heartbeat's services, each with its digest's manifest on the node's track: signed when one
   * is live, deprecated when the only one was withdrawn. One query for all of them.
   */
  private async servicesOf(hb: Heartbeat, track: string): Promise<NodeServiceView[]> {
    const digests = [...new Set(hb.services.map((s) => s.digest).filter((d): d is string => d !== null))]
    const {rows} = digests.length
      ? await this.db.query<{digest: string; image: string; deprecated: boolean}>('SELECT digest, image, deprecated_at IS NOT NULL AS deprecated FROM manifests WHERE track = $1 AND digest = ANY($2::text[])', [track, digests])
      : {rows: []}
    const manifests = new Map(rows.map((r) => [r.digest, r]))
    return [...hb.services]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((s) => {
        const m = s.digest === null ? undefined : manifests.get(s.digest)
        return {...s, signed: m !== undefined && !m.deprecated, deprecated: m?.deprecated ?? false, image: m?.image ?? null}
      })
  }

  /** A node speaks only for itself. */
  private caller(p: Principal, claimed: string, what: string): string {
    if (p.kind !== 'node') throw new JilError('FORBIDDEN', `only nodes send a ${what}`, {status: 403, hint: 'use a node identity (jil node join)'})
    if (claimed !== p.id) throw new JilError('NODE_MISMATCH', `a ${what} for ${claimed} sent by node ${p.id}`, {status: 403, hint: "a node reports only for itself; check the node's JIL_NODE_ID"})
    return p.id
  }
}
