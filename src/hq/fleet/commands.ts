
import type {CommandResult, CommandStatus, CommandTarget, FleetCommand, NodeCommand, NodeCommandName} from '../../shared/api.js'
import type {Clock} from '../../shared/clock.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {newId} from '../../shared/ids.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {notifyChanged} from '../events/hub.js'
import {actorOf} from '../identity/service.js'
import {zoneFromPath} from '../../shared/zones.js'

/** A command nobody picked up within this long is expired (the node was away: its next update run catches up). */
export const COMMAND_TTL_MS = 15 * 60_000
/** The longest a node's long-poll is held open (below every proxy's and the client's 30 s timeouts). */
export const MAX_WAIT_S = 25
/**
 * A delivered command without a result is handed out again after this long: the node may have
 * restarted mid-way. The node runs each id once, so a redelivery only fetches the answer again.
 */
export const REDELIVER_AFTER_MS = 60_000
/** How often a waiting long-poll looks at the database for commands other HQ replicas stored. */
const DB_POLL_MS = 1_000

type CommandRow = {
  id: string
  seq: number
  node_id: string
  command: NodeCommandName
  status: CommandStatus
  created_by: string
  created_at: Date
  expires_at: Date
  delivered_at: Date | null
  deliveries: number
  finished_at: Date | null
  result: CommandResult | null
}

const COLUMNS = 'id, seq, node_id, command, status, created_by, created_at, expires_at, delivered_at, deliveries, finished_at, result'

export function newCommandId(): string {
  return newId('cmd')
}

function toFleetCommand(r: CommandRow): FleetCommand {
  return {
    id: r.id,
    node_id: r.node_id,
    command: r.command,
    status: r.status,
    created_by: r.created_by,
    created_at: r.created_at.toISOString(),
    expires_at: r.expires_at.toISOString(),
    delivered_at: r.delivered_at?.toISOString() ?? null,
    deliveries: r.deliveries,
    finished_at: r.finished_at?.toISOString() ?? null,
    result: r.result,
  }
}

function describeTarget(t: CommandTarget): string {
  if ('all' in t) return 'all'
  if ('zone' in t) return `zone/${zoneFromPath(t.zone)}`
  return `node/${t.node}`
}

export type CommandFilter = {node?: string | undefined; status?: CommandStatus | undefined; limit?: number | undefined}

/**
 * Commands to nodes (DESIGN.md §6): stored at HQ, handed to each node's long-poll, answered once.
 * A long-poll wakes at once when a command is stored on this replica, and within a second (one
 * shared database poll per replica, whatever the number of waiting nodes) when another replica
 * stored it. `close()` ends every long-poll, so HQ's shutdown never waits on one.
 */
export class CommandService {
  private readonly waiters = new Map<string, Set<() => void>>()
  private closed = false
  private poller: ReturnType<typeof setInterval> | undefined
  private sweeper: ReturnType<typeof setInterval> | undefined

  constructor(
    private readonly db: Db,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
    private readonly o: {ttlMs?: number; redeliverAfterMs?: number} = {},
  ) {}

  /**
   * `POST /v1/fleet/commands` (broadcast): one command per target node and ONE audit entry, in one
   * transaction. Targets are active nodes only; an unknown or inactive single node is refused.
   */
  async enqueue(p: Principal, target: CommandTarget, command: NodeCommandName): Promise<{command: NodeCommandName; target: string; commands: FleetCommand[]}> {
    const where = describeTarget(target)
    const rows = await this.db.transaction(async (tx) => {
      const nodes = await this.targetNodes(tx, target)
      const created = await this.insert(tx, p, nodes, command)
      await this.ledger.append(tx, {actor: actorOf(p), action: 'node.command', subject: where, details: {command, target: where, nodes: nodes.length}})
      return created
    })
    this.wake(rows.map((r) => r.node_id))
    return {command, target: where, commands: rows.map(toFleetCommand)}
  }

  /**
   * Stores commands inside the caller's transaction (a run-mode action stores its refresh with the
   * change). The caller wakes the nodes once it has committed (see wake()). `p` is the user or node
   * that sent them, or the name of the HQ loop that did (e.g. `rollout:ro_…`).
   */
  async insert(tx: Queryable, p: Principal | string, nodeIds: readonly string[], command: NodeCommandName): Promise<CommandRow[]> {
    if (nodeIds.length === 0) return []
    const now = this.clock.now()
    const expires = new Date(now.getTime() + (this.o.ttlMs ?? COMMAND_TTL_MS))
    const ids = nodeIds.map(() => newCommandId())
    const {rows} = await tx.query<CommandRow>(
      `INSERT INTO fleet_commands (id, node_id, command, created_by, created_at, expires_at)
       SELECT c.id, c.node_id, $3, $4, $5, $6 FROM unnest($1::text[], $2::text[]) AS c(id, node_id)
       RETURNING ${COLUMNS}`,
      [ids, nodeIds, command, typeof p === 'string' ? p : p.kind === 'user' ? p.name : p.id, now, expires],
    )
    await notifyChanged(tx, 'commands', ids)
    return rows.sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0))
  }

  private async targetNodes(tx: Queryable, target: CommandTarget): Promise<string[]> {
    if ('node' in target) {
      const {rows} = await tx.query<{id: string; status: string}>('SELECT id, status FROM nodes WHERE id = $1', [target.node])
      const n = rows[0]
      if (!n) throw new JilError('NODE_UNKNOWN', `no node ${target.node}`, {status: 404, hint: 'see jil fleet nodes'})
      if (n.status !== 'active') throw new JilError('NODE_NOT_ACTIVE', `node ${n.id} is ${n.status}: it takes no commands`, {status: 409, hint: n.status === 'pending' ? 'the node must join first (jil node join)' : 'a revoked node is out of the fleet for good'})
      return [n.id]
    }
    const zone = 'zone' in target ? zoneFromPath(target.zone) : null
    const {rows} = await tx.query<{id: string}>("SELECT id FROM nodes WHERE status = 'active' AND ($1::text IS NULL OR zone = $1) ORDER BY id", [zone])
    if (rows.length === 0) {
      throw new JilError('NO_NODES', zone ? `no active node in ${zone}` : 'the fleet has no active node', {status: 404, hint: 'see jil fleet nodes'})
    }
    return rows.map((r) => r.id)
  }

  /** Wakes the long-polls of these nodes on this replica (after the commands are committed). */
  wake(nodeIds: Iterable<string>): void {
    for (const id of nodeIds) {
      const set = this.waiters.get(id)
      if (!set) continue
      for (const fn of set) fn()
    }
  }

  /**
   * `GET /v1/node/commands?wait=S`: the node's open commands, marked delivered; when there are none,
   * waits up to `waitS` seconds for one. Expired ones are settled first (lazily, on read).
   */
  async poll(nodeId: string, waitS: number, signal?: AbortSignal): Promise<NodeCommand[]> {
    const deadline = performance.now() + Math.min(Math.max(0, waitS), MAX_WAIT_S) * 1000
    for (;;) {
      const got = await this.claim(nodeId)
      if (got.length > 0 || this.closed || signal?.aborted) return got
      const left = deadline - performance.now()
      if (left <= 0) return []
      await this.waitFor(nodeId, Math.min(left, DB_POLL_MS * 5), signal)
    }
  }

  private async claim(nodeId: string): Promise<NodeCommand[]> {
    const now = this.clock.now()
    const redeliverBefore = new Date(now.getTime() - (this.o.redeliverAfterMs ?? REDELIVER_AFTER_MS))
    const rows = await this.db.transaction(async (tx) => {
      const {rows: expired} = await tx.query<{id: string}>("UPDATE fleet_commands SET status = 'expired', finished_at = $2 WHERE node_id = $1 AND status = 'pending' AND expires_at <= $2 RETURNING id", [nodeId, now])
      const {rows} = await tx.query<CommandRow>(
        `UPDATE fleet_commands SET status = 'delivered', delivered_at = $2, deliveries = deliveries + 1
          WHERE id IN (SELECT id FROM fleet_commands
                        WHERE node_id = $1 AND (status = 'pending' OR (status = 'delivered' AND delivered_at <= $3))
                        ORDER BY created_at, seq FOR UPDATE SKIP LOCKED)
          RETURNING ${COLUMNS}`,
        [nodeId, now, redeliverBefore],
      )
      await notifyChanged(tx, 'commands', [...expired.map((r) => r.id), ...rows.map((r) => r.id)])
      return rows
    })
    return rows
      .sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || a.seq - b.seq)
      .map((r) => ({id: r.id, command: r.command, created_at: r.created_at.toISOString(), expires_at: r.expires_at.toISOString(), deliveries: r.deliveries}))
  }

  /** Resolves on a wake-up for this node, on the shared DB poll finding one, after `ms`, on close or abort. */
  private waitFor(nodeId: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      let set = this.waiters.get(nodeId)
      if (!set) this.waiters.set(nodeId, (set = new Set()))
      const done = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        set.delete(done)
        if (set.size === 0 && this.waiters.get(nodeId) === set) this.waiters.delete(nodeId)
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal?.addEventListener('abort', done, {once: true})
      set.add(done)
      this.ensurePoller()
    })
  }

  /** One query a second for all waiting nodes of this replica: picks up commands stored by other replicas. */
  private ensurePoller(): void {
    if (this.poller || this.closed) return
    let busy = false
    this.poller = setInterval(() => {
      if (busy) return
      const waiting = [...this.waiters.keys()]
      if (waiting.length === 0) {
        clearInterval(this.poller)
        this.poller = undefined
        return
      }
      busy = true
      void this.db
        .query<{node_id: string}>("SELECT DISTINCT node_id FROM fleet_commands WHERE status = 'pending' AND node_id = ANY($1::text[])", [waiting])
        .then(({rows}) => this.wake(rows.map((r) => r.node_id)))
        .catch(() => {}) // the next tick tries again; each long-poll also re-reads on its own timer
        .finally(() => (busy = false))
    }, DB_POLL_MS)
    this.poller.unref()
  }

  /**
   * `POST /v1/node/commands/:id/result`: a node answers its own command. A second answer for a
   * finished command is ignored (the node may retry after a lost response); an expired one is a 409.
   */
  async recordResult(p: Principal, id: string, result: CommandResult): Promise<{id: string; status: CommandStatus; recorded: boolean}> {
    if (p.kind !== 'node') throw new JilError('FORBIDDEN', 'only nodes answer commands', {status: 403, hint: 'use a node identity (jil node join)'})
    const now = this.clock.now()
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<CommandRow>(`SELECT ${COLUMNS} FROM fleet_commands WHERE id = $1 FOR UPDATE`, [id])
      const c = rows[0]
      // Another node's command is as unknown to this node as one that does not exist.
      if (!c || c.node_id !== p.id) throw new JilError('COMMAND_UNKNOWN', `no command ${id} for node ${p.id}`, {status: 404, hint: 'a node answers only the commands it was given'})
      if (c.status === 'succeeded' || c.status === 'failed') return {id, status: c.status, recorded: false}
      if (c.status === 'expired' || (c.status === 'pending' && c.expires_at <= now)) {
        if (c.status === 'pending') await tx.query("UPDATE fleet_commands SET status = 'expired', finished_at = $2 WHERE id = $1", [id, now])
        throw new JilError('COMMAND_EXPIRED', `command ${id} expired at ${c.expires_at.toISOString()} before it was picked up`, {status: 409, hint: 'nothing to do: HQ no longer waits for it'})
      }
      const status: CommandStatus = result.ok ? 'succeeded' : 'failed'
      await tx.query('UPDATE fleet_commands SET status = $2, finished_at = $3, result = $4 WHERE id = $1', [id, status, now, JSON.stringify(result)])
      await notifyChanged(tx, 'commands', [id])
      return {id, status, recorded: true}
    })
  }

  /** `GET /v1/fleet/commands`: newest first; expired ones settled first. */
  async list(filter: CommandFilter = {}): Promise<FleetCommand[]> {
    await this.expireDue()
    const {rows} = await this.db.query<CommandRow>(
      `SELECT ${COLUMNS} FROM fleet_commands WHERE ($1::text IS NULL OR node_id = $1) AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, seq DESC LIMIT $3`,
      [filter.node ?? null, filter.status ?? null, Math.min(Math.max(1, filter.limit ?? 200), 1000)],
    )
    return rows.map(toFleetCommand)
  }

  /** `GET /v1/fleet/commands/:id`. */
  async get(id: string): Promise<FleetCommand> {
    await this.expireDue()
    const {rows} = await this.db.query<CommandRow>(`SELECT ${COLUMNS} FROM fleet_commands WHERE id = $1`, [id])
    if (!rows[0]) throw new JilError('COMMAND_UNKNOWN', `no command ${id}`, {status: 404, hint: 'see jil fleet broadcast, or GET /v1/fleet/commands'})
    return toFleetCommand(rows[0])
  }

  /** The commands with these ids, as list() shows them (the live stream's view of changed commands). */
  async byIds(ids: readonly string[]): Promise<FleetCommand[]> {
    if (ids.length === 0) return []
    const {rows} = await this.db.query<CommandRow>(`SELECT ${COLUMNS} FROM fleet_commands WHERE id = ANY($1::text[]) ORDER BY created_at DESC, seq DESC`, [ids])
    return rows.map(toFleetCommand)
  }

  /** Settles every pending command past its expiry; returns how many. */
  async expireDue(): Promise<number> {
    const now = this.clock.now()
    const r = await this.db.query<{id: string}>("UPDATE fleet_commands SET status = 'expired', finished_at = $1 WHERE status = 'pending' AND expires_at <= $1 RETURNING id", [now])
    // One statement, committed by now: the live stream hears of it right after.
    await notifyChanged(this.db, 'commands', r.rows.map((x) => x.id))
    return r.rowCount
  }

  /** The light periodic sweep (every replica may run it: the update is idempotent). */
  startSweep(everyMs = 60_000, onError: (err: unknown) => void = () => {}): void {
    if (this.sweeper || this.closed) return
    this.sweeper = setInterval(() => void this.expireDue().catch(onError), everyMs)
    this.sweeper.unref()
  }

  /** Ends every waiting long-poll (fastify's preClose) and the timers; later polls answer at once. */
  close(): void {
    this.closed = true
    clearInterval(this.poller)
    clearInterval(this.sweeper)
    this.poller = undefined
    this.sweeper = undefined
    for (const set of this.waiters.values()) for (const fn of [...set]) fn()
  }
}
