
import type {RollbackPlan, RollbackRequest, RolloutAction, RolloutPlan, RolloutView, UpgradeRequest, VersionRef} from '../../shared/api.js'
import {canonicalJson} from '../../shared/canonical.js'
import type {Clock} from '../../shared/clock.js'
import {Leadership} from '../../shared/db/leadership.js'
import {LOCKS, type Db, type Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {newId} from '../../shared/ids.js'
import {PassLoop} from '../../shared/loop.js'
import {compareVersions, type Track} from '../../shared/manifest.js'
import {rollbackPayload, type DesiredService, type RollbackPayload} from '../../shared/stack.js'
import type {UserSignature} from '../../shared/user-signature.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {notifyChanged} from '../events/hub.js'
import {actorOf} from '../identity/service.js'
import {zoneFromPath} from '../../shared/zones.js'
import type {StackService} from '../stack/service.js'
import type {CommandService} from './commands.js'
import {
  abortSteps,
  isOpen,
  OPEN_ROLLOUT_STATES,
  stepRollout,
  type NodeObservation,
  type NodeStep,
  type PreviousVersion,
  type RolloutNode,
  type RolloutParams,
  type RolloutState,
} from './rollout-engine.js'

export const ROLLOUT_DEFAULTS = {max_parallel: 1, min_healthy_s: 30, health_timeout_s: 300, canary: 0} as const

export type RolloutTarget = {zone: string} | {node: string}

type RolloutRow = RolloutParams & {
  id: string
  target: {zone?: string; node?: string; track?: string}
  image: string
  repository: string
  version: string
  created_by: string
  created_at: Date
  updated_at: Date
  finished_at: Date | null
}

/** A service of a rollout node as stored: what it ran before, and the user's signed rollback to it (auto-revert). */
type StoredService = {service: string; from: PreviousVersion; revert?: UserSignature}

type NodeRow = {node_id: string; position: number; services: StoredService[]; state: RolloutNode['state']; started_at: Date | null; healthy_since: Date | null; finished_at: Date | null; error: string | null}

const ROLLOUT_COLUMNS =
  'id, target, image, repository, digest, version, max_parallel, min_healthy_ms, health_timeout_ms, auto_revert, canary, canary_released, state, reason, created_by, created_at, updated_at, finished_at'

export function newRolloutId(): string {
  return newId('ro')
}

const iso = (d: Date | null) => d?.toISOString() ?? null
const ref = (p: PreviousVersion): VersionRef | null => (p ? {version: p.version, digest: p.digest} : null)

function toView(r: RolloutRow, nodes: NodeRow[]): RolloutView {
  const counts: Record<string, number> = {}
  for (const n of nodes) counts[n.state] = (counts[n.state] ?? 0) + 1
  return {
    id: r.id,
    target: r.target,
    image: r.image,
    repository: r.repository,
    digest: r.digest,
    version: r.version,
    max_parallel: r.max_parallel,
    min_healthy_s: Math.round(r.min_healthy_ms / 1000),
    health_timeout_s: Math.round(r.health_timeout_ms / 1000),
    auto_revert: r.auto_revert,
    canary: r.canary,
    state: r.state,
    reason: r.reason,
    created_by: r.created_by,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
    finished_at: iso(r.finished_at),
    counts,
    nodes: nodes
      .sort((a, b) => a.position - b.position)
      .map((n) => ({
        node_id: n.node_id,
        position: n.position,
        state: n.state,
        services: n.services.map((s) => ({service: s.service, from: ref(s.from)})),
        started_at: iso(n.started_at),
        healthy_since: iso(n.healthy_since),
        finished_at: iso(n.finished_at),
        error: n.error,
      })),
  }
}

const PAST: Record<RolloutAction, string> = {pause: 'paused', resume: 'resumed', abort: 'aborted'}

const notFound = (id: string) => new JilError('ROLLOUT_UNKNOWN', `no rollout ${id}`, {status: 404, hint: 'see jil fleet rollout status'})

/**
 * Rollouts and per-node rollbacks (issue 7): both are changes to nodes' pins (node_pins), which the
 * nodes' desired states carry, each followed by a refresh command. Creating, pausing, resuming and
 * aborting a rollout, and every step the driver takes, are audited in the transaction that makes them.
 */
export class RolloutService {
  constructor(
    private readonly db: Db,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
    private readonly commands: CommandService,
    private readonly stacks: StackService,
    /** Runs the driver now (after a create or resume), so the first node moves at once. */
    private readonly kick: () => void = () => {},
  ) {}

  /** `POST …/upgrade`: plans the rollout; unless a dry run, stores it for the driver. */
  async upgrade(p: Principal, target: RolloutTarget, req: UpgradeRequest): Promise<RolloutView | RolloutPlan> {
    const at = req.image.lastIndexOf('@')
    const name = req.image.slice(0, at)
    const digest = req.image.slice(at + 1)
    const maxParallel = req.max_parallel ?? ROLLOUT_DEFAULTS.max_parallel
    const minHealthyS = req.min_healthy_s ?? ROLLOUT_DEFAULTS.min_healthy_s
    const timeoutS = req.health_timeout_s ?? ROLLOUT_DEFAULTS.health_timeout_s
    if (minHealthyS >= timeoutS) {
      throw new JilError('ROLLOUT_INVALID', `min-healthy (${minHealthyS} s) must be shorter than health-timeout (${timeoutS} s)`, {status: 400, hint: 'e.g. --min-healthy 30s --health-timeout 5m'})
    }
    const revoked = req.dry_run || !req.auto_revert ? new Set<string>() : await this.stacks.revokedUserSerials()
    const out = await this.db.transaction(async (tx) => {
      const plan = await this.plan(tx, target, name, digest, req.track)
      if (req.dry_run) return plan.view
      await this.assertNoOpenRollout(tx, plan.view.nodes.map((n) => n.node_id))
      const signatures = new Map<string, UserSignature>()
      if (req.auto_revert) {
        const given = (req.revert_signatures ?? []) as UserSignature[]
        for (const payload of plan.view.revert_payloads as RollbackPayload[]) {
          const key = canonicalJson(payload)
          const sig = given.find((s) => s && typeof s === 'object' && canonicalJson(s.payload) === key)
          this.stacks.checkRollback(p, sig, payload, plan.version, revoked, 'jil fleet upgrade --auto-revert signs the rollbacks auto-revert needs with your key (ops-lead or admin)')
          signatures.set(key, sig!)
        }
      }
      const id = newRolloutId()
      const now = this.clock.now()
      const targetJson = {...('zone' in target ? {zone: zoneFromPath(target.zone)} : {node: target.node}), ...(req.track ? {track: req.track} : {})}
      await tx.query(
        `INSERT INTO rollouts (id, target, image, repository, digest, version, max_parallel, min_healthy_ms, health_timeout_ms, auto_revert, canary, state, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'running', $12, $13, $13)`,
        [id, JSON.stringify(targetJson), plan.image, plan.repository, digest, plan.version, maxParallel, minHealthyS * 1000, timeoutS * 1000, req.auto_revert ?? false, req.canary ?? 0, actorName(p), now],
      )
      const nodes = plan.view.nodes.map((n, i) => ({
        node_id: n.node_id,
        position: i + 1,
        services: plan.previous.get(n.node_id)!.map((s): StoredService => {
          const payload = s.from && req.auto_revert ? signatures.get(canonicalJson(rollbackPayload(n.track as Track, s.service, plan.image, s.from.digest, s.from.version))) : undefined
          return {service: s.service, from: s.from, ...(payload ? {revert: payload} : {})}
        }),
      }))
      await tx.query(
        `INSERT INTO rollout_nodes (rollout_id, node_id, position, services, state)
         SELECT $1, n.node_id, n.position, n.services, 'pending' FROM jsonb_to_recordset($2::jsonb) AS n(node_id text, position integer, services jsonb)`,
        [id, JSON.stringify(nodes)],
      )
      await this.ledger.append(tx, {
        actor: actorOf(p),
        action: 'rollout.start',
        subject: id,
        details: {target: targetJson, image: plan.image, digest, version: plan.version, nodes: nodes.map((n) => n.node_id), max_parallel: maxParallel, min_healthy_s: minHealthyS, health_timeout_s: timeoutS, auto_revert: req.auto_revert ?? false, canary: req.canary ?? 0},
      })
      await notifyChanged(tx, 'rollouts', [id])
      return id
    })
    if (typeof out !== 'string') return out
    this.kick()
    return this.get(out)
  }

  /**
   * Which nodes a rollout moves and from what. The digest needs a live manifest on each node's
   * track; devnet nodes are left out (they follow their newest devnet manifest); a lower version is
   * a rollback, not an upgrade.
   */
  private async plan(tx: Queryable, target: RolloutTarget, name: string, digest: string, track: Track | undefined) {
    const {rows: candidates} = await tx.query<{id: string; status: string; joined_at: Date | null; track: Track; run_mode: string}>(
      'zone' in target ? 'SELECT id, status, joined_at, track, run_mode FROM nodes WHERE zone = $1 ORDER BY id' : 'SELECT id, status, joined_at, track, run_mode FROM nodes WHERE id = $1',
      ['zone' in target ? zoneFromPath(target.zone) : target.node],
    )
    if ('node' in target) {
      const n = candidates[0]
      if (!n) throw new JilError('NODE_UNKNOWN', `no node ${target.node}`, {status: 404, hint: 'see jil fleet nodes'})
      if (n.status !== 'active' || !n.joined_at) throw new JilError('NODE_NOT_ACTIVE', `node ${n.id} is ${n.status === 'active' ? 'not joined' : n.status}: it cannot be upgraded`, {status: 409, hint: 'see jil fleet node ' + n.id})
      if (n.track === 'devnet') {
        throw new JilError('ROLLOUT_DEVNET', `${n.id} is a devnet node: it runs the newest signed devnet manifest of each service`, {status: 409, hint: 'sign a newer version onto devnet (jil hq sign); rollouts move testnet and mainnet nodes'})
      }
      if (n.run_mode === 'stopped') throw new JilError('NODE_STOPPED', `${n.id} is stopped: its services do not run, so it could never count as healthy`, {status: 409, hint: `start it first: jil fleet start ${n.id}`})
    }
    const skipped: RolloutPlan['skipped'] = []
    const nodes: {id: string; track: Track}[] = []
    for (const n of candidates) {
      if (n.status !== 'active' || !n.joined_at) continue
      if (n.track === 'devnet') skipped.push({node_id: n.id, reason: 'devnet follows its newest signed manifest'})
      else if (track && n.track !== track) skipped.push({node_id: n.id, reason: `on ${n.track}, not ${track}`})
      else if (n.run_mode === 'stopped') skipped.push({node_id: n.id, reason: 'stopped: its services do not run (jil fleet start)'})
      else nodes.push({id: n.id, track: n.track})
    }
    if (nodes.length === 0) {
      throw new JilError('NO_NODES', `no active testnet or mainnet node in ${'zone' in target ? zoneFromPath(target.zone) : target.node}${track ? ` on ${track}` : ''}`, {status: 404, hint: 'see jil fleet nodes'})
    }
    const {rows: manifests} = await tx.query<{image: string; version: string; repository: string; track: Track; created_at: Date}>(
      "SELECT image, version, body->>'repository' AS repository, track, created_at FROM manifests WHERE digest = $1 AND deprecated_at IS NULL ORDER BY created_at DESC",
      [digest],
    )
    const m = manifests.find((x) => x.image === name || x.repository === name)
    if (!m) {
      throw new JilError('NOT_SIGNED', `${name}@${digest} has no live signed manifest`, {status: 404, hint: 'sign and promote it first (jil hq sign, jil hq approve, jil hq promote); jil hq images lists what is there'})
    }
    const tracks = new Set(manifests.filter((x) => x.image === m.image).map((x) => x.track))
    const off = nodes.filter((n) => !tracks.has(n.track))
    if (off.length) {
      throw new JilError('NOT_ON_TRACK', `${m.image} ${m.version} is not promoted to ${[...new Set(off.map((n) => n.track))].join(' or ')}, where ${off.map((n) => n.id).join(', ')} run`, {
        status: 409,
        hint: `promote it (jil hq promote ${m.image}@${digest} --to ${off[0]!.track}) or limit the rollout with --track`,
      })
    }
    const previous = new Map<string, {service: string; from: PreviousVersion}[]>()
    const revert = new Map<string, RollbackPayload>()
    const viewNodes: RolloutPlan['nodes'] = []
    for (const n of nodes) {
      const {record, services} = await this.stacks.nodeServices(tx, n.id, n.track)
      const running = new Map<string, DesiredService>(services.map((s) => [s.name, s]))
      const mine = (record?.spec.services ?? []).filter((s) => s.image === m.image)
      if (mine.length === 0) {
        throw new JilError('IMAGE_NOT_IN_STACK', `no service of ${n.track}'s stack runs ${m.image} (node ${n.id})`, {status: 409, hint: `add it to the stack first: jil hq stack set --track ${n.track} FILE`})
      }
      const list = mine.map((s) => {
        const cur = running.get(s.name)
        const from: PreviousVersion = cur ? {version: cur.version, digest: cur.digest, repository: cur.repository} : null
        if (from && compareVersions(m.version, from.version) < 0) {
          throw new JilError('VERSION_LOWER', `${n.id} runs ${s.name} ${from.version}; ${m.version} is lower: that is a rollback`, {status: 409, hint: `roll a node back with jil fleet rollback ${n.id}`})
        }
        if (from && from.digest !== digest && compareVersions(from.version, m.version) < 0) {
          const payload = rollbackPayload(n.track, s.name, m.image, from.digest, from.version)
          revert.set(canonicalJson(payload), payload)
        }
        return {service: s.name, from}
      })
      previous.set(n.id, list)
      viewNodes.push({node_id: n.id, track: n.track, services: list.map((s) => ({service: s.service, from: ref(s.from)}))})
    }
    const view: RolloutPlan = {image: m.image, digest, version: m.version, nodes: viewNodes, skipped, revert_payloads: [...revert.values()]}
    return {view, previous, image: m.image, repository: m.repository, version: m.version}
  }

  private async assertNoOpenRollout(tx: Queryable, nodeIds: string[]): Promise<void> {
    const {rows} = await tx.query<{rollout_id: string; node_id: string}>(
      `SELECT rn.rollout_id, rn.node_id FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id
        WHERE rn.node_id = ANY($1::text[]) AND r.state = ANY($2::text[]) LIMIT 1`,
      [nodeIds, OPEN_ROLLOUT_STATES],
    )
    const hit = rows[0]
    if (hit) {
      throw new JilError('ROLLOUT_CONFLICT', `${hit.node_id} is in rollout ${hit.rollout_id}, still open`, {status: 409, hint: `wait for it, or end it: jil fleet rollout abort ${hit.rollout_id}`})
    }
  }

  async get(id: string, q: Queryable = this.db): Promise<RolloutView> {
    const {rows} = await q.query<RolloutRow>(`SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1`, [id])
    if (!rows[0]) throw notFound(id)
    return toView(rows[0], await this.nodesOf(q, id))
  }

  /** Open rollouts first, then the most recent ones. */
  async list(o: {open?: boolean | undefined; limit?: number | undefined; ids?: readonly string[] | undefined} = {}): Promise<RolloutView[]> {
    if (o.ids?.length === 0) return []
    const {rows} = await this.db.query<RolloutRow>(
      `SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE ($1::boolean IS NOT TRUE OR state = ANY($2::text[])) AND ($4::text[] IS NULL OR id = ANY($4::text[])) ORDER BY seq DESC LIMIT $3`,
      [o.open ?? false, OPEN_ROLLOUT_STATES, o.limit ?? o.ids?.length ?? 20, o.ids ?? null],
    )
    if (rows.length === 0) return []
    const {rows: nodes} = await this.db.query<NodeRow & {rollout_id: string}>(
      'SELECT rollout_id, node_id, position, services, state, started_at, healthy_since, finished_at, error FROM rollout_nodes WHERE rollout_id = ANY($1::text[])',
      [rows.map((r) => r.id)],
    )
    return rows.map((r) => toView(r, nodes.filter((n) => n.rollout_id === r.id)))
  }

  /** pause (running → paused), resume (paused → running, past a canary), abort (any open → aborted, nodes stay where they are). */
  async act(p: Principal, id: string, action: RolloutAction): Promise<RolloutView> {
    const out = await this.db.transaction(async (tx) => {
      const {rows} = await tx.query<RolloutRow>(`SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1 FOR UPDATE`, [id])
      const r = rows[0]
      if (!r) throw notFound(id)
      const now = this.clock.now()
      const wrong = (hint: string) => new JilError('ROLLOUT_STATE', `rollout ${id} is ${r.state}: it cannot ${action}`, {status: 409, hint})
      let next: RolloutState
      if (action === 'pause') {
        if (r.state !== 'running') throw wrong(r.state === 'paused' ? 'it is paused already' : 'only a running rollout pauses')
        next = 'paused'
      } else if (action === 'resume') {
        if (r.state !== 'paused') throw wrong('only a paused rollout resumes')
        next = 'running'
      } else {
        if (!isOpen(r.state)) throw wrong('it has ended already')
        next = 'aborted'
        const steps = abortSteps(await this.nodesOf(tx, id, true))
        await this.writeSteps(tx, r, steps, new Map(), now)
      }
      await tx.query(
        `UPDATE rollouts SET state = $2, reason = $3, updated_at = $4, finished_at = CASE WHEN $2 = 'aborted' THEN $4 ELSE finished_at END,
           canary_released = canary_released OR ($2 = 'running' AND canary > 0) WHERE id = $1`,
        [id, next, action === 'resume' ? null : `${PAST[action]} by ${actorName(p)}`, now],
      )
      await this.ledger.append(tx, {actor: actorOf(p), action: `rollout.${action}`, subject: id, details: {from: r.state, to: next}})
      await notifyChanged(tx, 'rollouts', [id])
      return this.get(id, tx)
    })
    if (action === 'resume') this.kick()
    return out
  }

  /**
   * `POST /v1/fleet/nodes/:id/rollback`: pins each service (or one) back to its previous signed
   * version: the version before the node's own last pin, else the newest live version on the track
   * below what it runs. A downgrade needs the caller's signed rollback for each service, which the
   * node checks too; a dry run lists them to sign.
   */
  async rollback(p: Principal, nodeId: string, req: RollbackRequest): Promise<RollbackPlan> {
    const revoked = req.dry_run ? new Set<string>() : await this.stacks.revokedUserSerials()
    let commandId: string | null = null
    const plan = await this.db.transaction(async (tx): Promise<RollbackPlan> => {
      const {rows} = await tx.query<{status: string; joined_at: Date | null; track: Track}>('SELECT status, joined_at, track FROM nodes WHERE id = $1 FOR UPDATE', [nodeId])
      const n = rows[0]
      if (!n) throw new JilError('NODE_UNKNOWN', `no node ${nodeId}`, {status: 404, hint: 'see jil fleet nodes'})
      if (n.status !== 'active' || !n.joined_at) throw new JilError('NODE_NOT_ACTIVE', `node ${nodeId} is ${n.status === 'active' ? 'not joined' : n.status}: nothing to roll back`, {status: 409, hint: `see jil fleet node ${nodeId}`})
      if (n.track === 'devnet') {
        throw new JilError('ROLLOUT_DEVNET', `${nodeId} is a devnet node: it follows the newest signed devnet manifest`, {status: 409, hint: 'withdraw the bad devnet build instead: jil hq deprecate IMAGE@DIGEST --reason TEXT'})
      }
      await this.assertNoOpenRollout(tx, [nodeId])
      const {record, services} = await this.stacks.nodeServices(tx, nodeId, n.track)
      if (req.service && !record?.spec.services.some((s) => s.name === req.service)) {
        throw new JilError('SERVICE_UNKNOWN', `${n.track}'s stack has no service ${req.service}`, {status: 404, hint: `services: ${(record?.spec.services ?? []).map((s) => s.name).join(', ')}`})
      }
      const {rows: pins} = await tx.query<{service: string; previous_version: string | null; previous_digest: string | null}>('SELECT service, previous_version, previous_digest FROM node_pins WHERE node_id = $1', [nodeId])
      const {rows: live} = await tx.query<{image: string; version: string; digest: string; repository: string; created_at: Date}>(
        "SELECT image, version, digest, body->>'repository' AS repository, created_at FROM manifests WHERE track = $1 AND deprecated_at IS NULL",
        [n.track],
      )
      const moves: (RollbackPlan['services'][number] & {image: string; repository: string})[] = []
      for (const s of services) {
        if (req.service && s.name !== req.service) continue
        const pin = pins.find((x) => x.service === s.name)
        const ofImage = live.filter((m) => m.image === s.image)
        const before = pin?.previous_digest ? ofImage.find((m) => m.digest === pin.previous_digest && m.version === pin.previous_version) : undefined
        const lower = ofImage.filter((m) => compareVersions(m.version, s.version) < 0).sort((a, b) => compareVersions(b.version, a.version) || b.created_at.getTime() - a.created_at.getTime())[0]
        const to = before && compareVersions(before.version, s.version) < 0 ? before : lower
        if (!to) continue
        moves.push({service: s.name, image: s.image, repository: to.repository, from: {version: s.version, digest: s.digest}, to: {version: to.version, digest: to.digest}})
      }
      if (moves.length === 0) {
        throw new JilError('NOTHING_TO_ROLL_BACK', `${nodeId}${req.service ? `'s ${req.service}` : ''} has no lower signed version on ${n.track} to go back to`, {status: 409, hint: `see jil hq images --track ${n.track}`})
      }
      const payloads = moves.map((m) => rollbackPayload(n.track, m.service, m.image, m.to.digest, m.to.version))
      const view: RollbackPlan = {node_id: nodeId, track: n.track, services: moves.map(({service, from, to}) => ({service, from, to})), payloads, applied: false, command_id: null}
      if (req.dry_run) return view
      const given = (req.signatures ?? []) as UserSignature[]
      const now = this.clock.now()
      for (const [i, m] of moves.entries()) {
        const payload = payloads[i]!
        const sig = given.find((s) => s && typeof s === 'object' && canonicalJson(s.payload) === canonicalJson(payload))
        this.stacks.checkRollback(p, sig, payload, m.from.version, revoked, `jil fleet rollback ${nodeId} signs it with your key (ops-lead or admin)`)
        await upsertPin(tx, nodeId, m.service, {version: m.to.version, digest: m.to.digest, repository: m.repository}, sig!, {version: m.from.version, digest: m.from.digest}, null, actorName(p), now)
      }
      const [cmd] = await this.commands.insert(tx, p, [nodeId], 'refresh')
      commandId = cmd!.id
      await this.ledger.append(tx, {actor: actorOf(p), action: 'node.rollback', subject: nodeId, details: {services: view.services, command_id: commandId}})
      return {...view, applied: true, command_id: commandId}
    })
    if (commandId) this.commands.wake([nodeId])
    return plan
  }

  // -------------------------------------------------------------------------------------------
  // The driver's side

  /** Ids of the open rollouts, oldest first. */
  async openIds(): Promise<string[]> {
    const {rows} = await this.db.query<{id: string}>('SELECT id FROM rollouts WHERE state = ANY($1::text[]) ORDER BY seq', [OPEN_ROLLOUT_STATES])
    return rows.map((r) => r.id)
  }

  /** One step of one rollout, in one transaction: judge, write pins and states, send refreshes, audit. Returns the nodes to wake. */
  async advance(id: string, transaction: Db['transaction'] = (fn) => this.db.transaction(fn)): Promise<string[]> {
    return transaction(async (tx) => {
      const {rows} = await tx.query<RolloutRow>(`SELECT ${ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1 FOR UPDATE`, [id])
      const r = rows[0]
      if (!r || !isOpen(r.state)) return []
      const nodes = await this.nodesOf(tx, id, true)
      const now = this.clock.now()
      const inFlight = nodes.filter((n) => n.state === 'upgrading' || n.state === 'reverting').map((n) => n.node_id)
      const observations = await this.observe(tx, inFlight)
      const params: RolloutParams = {...r}
      const step = stepRollout(params, nodes, observations, now)
      if (step.nodes.length === 0 && !step.rollout) return []
      const woken = await this.writeSteps(tx, r, step.nodes, new Map(nodes.map((n) => [n.node_id, n])), now)
      if (step.rollout) {
        await tx.query(`UPDATE rollouts SET state = $2, reason = $3, updated_at = $4::timestamptz, finished_at = CASE WHEN $5::boolean THEN $4::timestamptz ELSE NULL END WHERE id = $1`, [
          id,
          step.rollout.state,
          step.rollout.reason,
          now,
          !isOpen(step.rollout.state),
        ])
      } else {
        await tx.query('UPDATE rollouts SET updated_at = $2 WHERE id = $1', [id, now])
      }
      await notifyChanged(tx, 'rollouts', [id])
      const moved = step.nodes.filter((s) => s.from !== s.to)
      if (moved.length || step.rollout) {
        await this.ledger.append(tx, {
          actor: {type: 'hq', id: 'rollouts'},
          action: step.rollout ? `rollout.${step.rollout.state}` : 'rollout.progress',
          subject: id,
          details: {...(step.rollout ? {from: r.state, to: step.rollout.state, reason: step.rollout.reason} : {}), nodes: moved.map((s) => ({node_id: s.node_id, from: s.from, to: s.to, ...(s.error ? {error: s.error} : {})}))},
        })
      }
      return woken
    })
  }

  private async nodesOf(q: Queryable, id: string, lock = false): Promise<NodeRow[]> {
    const {rows} = await q.query<NodeRow>(
      `SELECT node_id, position, services, state, started_at, healthy_since, finished_at, error FROM rollout_nodes WHERE rollout_id = $1 ORDER BY position${lock ? ' FOR UPDATE' : ''}`,
      [id],
    )
    return rows
  }

  /** The latest heartbeat of each node in flight, and what its latest update report says failed or was refused. */
  private async observe(q: Queryable, nodeIds: string[]): Promise<Map<string, NodeObservation>> {
    const out = new Map<string, NodeObservation>()
    if (nodeIds.length === 0) return out
    const {rows: hb} = await q.query<{node_id: string; received_at: Date; services: NodeObservation['services'] | null}>(
      "SELECT node_id, received_at, body->'services' AS services FROM node_heartbeats WHERE node_id = ANY($1::text[])",
      [nodeIds],
    )
    for (const h of hb) out.set(h.node_id, {heartbeat_at: h.received_at, services: h.services ?? [], update_failures: []})
    const {rows: reports} = await q.query<{node_id: string; received_at: Date; actions: {service: string; action: string; outcome: string; to: {digest: string | null} | null; error?: {code: string; message: string}}[] | null}>(
      "SELECT node_id, received_at, body->'details'->'actions' AS actions FROM node_reports WHERE agent = 'update' AND node_id = ANY($1::text[])",
      [nodeIds],
    )
    for (const r of reports) {
      const o = out.get(r.node_id) ?? {heartbeat_at: null, services: [], update_failures: []}
      const failures = (Array.isArray(r.actions) ? r.actions : [])
        .filter((a) => (a.outcome === 'failed' || a.outcome === 'refused') && (a.action === 'create' || a.action === 'replace') && typeof a.to?.digest === 'string')
        .map((a) => ({at: r.received_at, service: a.service, digest: a.to?.digest ?? null, message: `${a.service} ${a.outcome === 'refused' ? 'refused' : 'failed'} on the node: ${a.error?.code ?? 'error'}${a.error?.message ? `: ${a.error.message}` : ''}`.slice(0, 500)}))
      out.set(r.node_id, {...o, update_failures: failures})
    }
    return out
  }

  /** Writes node steps: states and timestamps, the pins they call for, and a refresh to each re-pinned node (returned, to wake after commit). */
  private async writeSteps(tx: Queryable, r: RolloutRow, steps: readonly NodeStep[], byId: Map<string, NodeRow>, now: Date): Promise<string[]> {
    const repinned = new Set<string>()
    for (const s of steps) {
      const sets = ['state = $3']
      const args: unknown[] = [r.id, s.node_id, s.to]
      for (const col of ['started_at', 'healthy_since', 'finished_at', 'error'] as const) {
        if (s[col] === undefined) continue
        args.push(s[col])
        sets.push(`${col} = $${args.length}`)
      }
      await tx.query(`UPDATE rollout_nodes SET ${sets.join(', ')} WHERE rollout_id = $1 AND node_id = $2`, args)
      const node = byId.get(s.node_id)
      if (!s.pin || !node) continue
      repinned.add(s.node_id)
      for (const svc of node.services) {
        if (s.pin === 'target') {
          await upsertPin(tx, s.node_id, svc.service, {version: r.version, digest: r.digest, repository: r.repository}, null, svc.from, r.id, `rollout:${r.id}`, now)
        } else if (svc.from) {
          const lower = compareVersions(svc.from.version, r.version) < 0
          await upsertPin(tx, s.node_id, svc.service, svc.from, lower ? (svc.revert ?? null) : null, {version: r.version, digest: r.digest}, r.id, `rollout:${r.id}`, now)
        } else {
          await tx.query('DELETE FROM node_pins WHERE node_id = $1 AND service = $2', [s.node_id, svc.service])
        }
      }
    }
    if (repinned.size) await this.commands.insert(tx, `rollout:${r.id}`, [...repinned], 'refresh')
    await notifyChanged(tx, 'nodes', steps.filter((s) => s.from !== s.to).map((s) => s.node_id)) // a node's status shows whether a rollout moves it
    return [...repinned]
  }
}

async function upsertPin(
  tx: Queryable,
  nodeId: string,
  service: string,
  to: {version: string; digest: string; repository: string},
  rollback: UserSignature | null,
  previous: {version: string; digest: string} | null,
  rolloutId: string | null,
  by: string,
  now: Date,
): Promise<void> {
  await tx.query(
    `INSERT INTO node_pins (node_id, service, version, digest, repository, rollback, previous_version, previous_digest, rollout_id, pinned_by, pinned_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (node_id, service) DO UPDATE SET version = EXCLUDED.version, digest = EXCLUDED.digest, repository = EXCLUDED.repository, rollback = EXCLUDED.rollback,
       previous_version = EXCLUDED.previous_version, previous_digest = EXCLUDED.previous_digest, rollout_id = EXCLUDED.rollout_id, pinned_by = EXCLUDED.pinned_by, pinned_at = EXCLUDED.pinned_at`,
    [nodeId, service, to.version, to.digest, to.repository, rollback ? JSON.stringify(rollback) : null, previous?.version ?? null, previous?.digest ?? null, rolloutId, by, now],
  )
}

function actorName(p: Principal): string {
  return p.kind === 'user' ? p.name : p.id
}

export type RolloutDriverOptions = {everyMs?: number; onError?: (err: unknown) => void}

/**
 * Advances every open rollout, on one HQ replica at a time (an advisory lock held while this replica
 * drives; another replica takes over when this one's session ends). One owned, single-flight loop:
 * an overlapping tick joins the run in flight; kick() runs it now; stop() waits for the run in flight.
 */
export class RolloutDriver {
  private readonly loop: PassLoop<void>
  private readonly leadership: Leadership

  constructor(
    db: Db,
    private readonly rollouts: () => RolloutService,
    private readonly commands: CommandService,
    o: RolloutDriverOptions = {},
  ) {
    this.leadership = new Leadership(db, LOCKS.rollouts)
    this.loop = new PassLoop(() => this.pass(), {everyMs: o.everyMs ?? 2_000, overlap: 'again', ...(o.onError ? {onError: o.onError} : {})})
  }

  start(): void {
    this.loop.start()
  }

  kick(): void {
    this.loop.kick()
  }

  /** One pass over the open rollouts (a kick during a pass runs one more pass after it). */
  tick(): Promise<void> {
    return this.loop.tick()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
    await this.leadership.release()
  }

  private async pass(): Promise<void> {
    if (this.loop.stopped) return
    const lock = await this.leadership.acquire()
    if (!lock) return
    const service = this.rollouts()
    try {
      for (const id of await service.openIds()) {
        if (this.loop.stopped) return
        // On the lock's own session: if that session (and so the lock) is lost, the step is lost with
        // it rather than committed beside another replica that took over.
        const woken = await service.advance(id, (fn) => lock.transaction(fn))
        if (woken.length) this.commands.wake(woken)
      }
    } catch (err) {
      // The lock's session may be what failed: let go, so this or another replica takes over afresh.
      await this.leadership.release()
      throw err
    }
  }
}
