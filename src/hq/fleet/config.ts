import type {ConfigListing, ConfigPushNode, ConfigPushRequest, ConfigPushResult} from '../../shared/api.js'
import type {Clock} from '../../shared/clock.js'
import {configBytes, configNameProblem, configVersionOf, MAX_CONFIG_BYTES, nulCharacterAt, sha256Hex, type ConfigDoc, type ConfigDocRef, type ConfigScope} from '../../shared/config-docs.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {ZONES_HINT, zoneFromPath} from '../../shared/zones.js'
import {actorOf} from '../identity/service.js'
import type {CommandService} from './commands.js'

/** Where a push goes: a zone (URL form CH_FINMA or CH/FINMA) or one node. */
export type ConfigTarget = {zone: string} | {node: string}

type DocRow = {name: string; scope: ConfigScope; version: number; seq: number; sha256: string; content: unknown; created_by: string; created_at: Date}

/**
 * A node's effective config, as its desired state carries it: for each name, the newest node
 * document if there is one, else the newest document of the node's zone; sorted by name. The rule
 * itself is one SQL function (migration 010), shared with the push and the nodes trigger.
 */
export async function effectiveConfig(q: Queryable, nodeId: string, zone: string): Promise<ConfigDoc[]> {
  const {rows} = await q.query<DocRow>('SELECT name, scope, version, seq, sha256, content FROM jil_node_config_docs($1, $2) ORDER BY name', [nodeId, zone])
  return rows.map((r) => ({name: r.name, scope: r.scope, version: r.version, seq: r.seq, sha256: r.sha256, content: r.content}))
}

/** effectiveConfig without the contents (what `jil fleet node` shows). */
export async function effectiveConfigRefs(q: Queryable, nodeId: string, zone: string): Promise<ConfigDocRef[]> {
  const {rows} = await q.query<DocRow>('SELECT name, scope, version, seq, sha256 FROM jil_node_config_docs($1, $2) ORDER BY name', [nodeId, zone])
  return rows.map((r) => ({name: r.name, scope: r.scope, version: r.version, seq: r.seq, sha256: r.sha256}))
}

/**
 * Config push (issue 7): versioned config documents per zone or per node. A push stores the next
 * version of the document, raises the config version of each node whose effective config it changes
 * (nodes.config_version, which desired states carry), writes its audit entry and sends those nodes a
 * refresh, all in one transaction; the nodes' long-polls are woken once it has committed. Content
 * equal to the newest version changes nothing.
 */
export class ConfigService {
  constructor(
    private readonly db: Db,
    private readonly ledger: AuditLedger,
    private readonly commands: CommandService,
    private readonly clock: Clock,
  ) {}

  async push(p: Principal, target: ConfigTarget, body: ConfigPushRequest): Promise<ConfigPushResult> {
    const {name, content} = body
    const badName = configNameProblem(name)
    if (badName) throw new JilError('CONFIG_NAME_INVALID', badName, {status: 400, hint: 'name the document like a file: fees-ch, zone.params (it becomes <name>.json on the node)', details: {field: 'name'}})
    const nul = nulCharacterAt(content)
    if (nul) throw new JilError('CONFIG_INVALID', `the content holds a NUL character (at ${nul})`, {status: 400, hint: 'remove \\u0000 from the document', details: {field: 'content'}})
    let canonical: string
    try {
      canonical = configBytes(content)
    } catch (err) {
      throw new JilError('CONFIG_INVALID', `the content cannot be written as canonical JSON: ${err instanceof Error ? err.message : String(err)}`, {status: 400, hint: 'send plain JSON', details: {field: 'content'}})
    }
    const bytes = Buffer.byteLength(canonical)
    if (bytes > MAX_CONFIG_BYTES) {
      throw new JilError('CONFIG_TOO_LARGE', `the document is ${bytes} bytes of canonical JSON; the limit is ${MAX_CONFIG_BYTES}`, {status: 413, hint: 'split it into several documents', details: {field: 'content'}})
    }
    const sha256 = sha256Hex(canonical)
    const scope: ConfigScope = 'zone' in target ? 'zone' : 'node'
    const now = this.clock.now()
    const actor = actorOf(p)

    const out = await this.db.transaction(async (tx): Promise<ConfigPushResult> => {
      const where = await this.lockTarget(tx, target)
      const {rows: newest} = await tx.query<{version: number; seq: number; sha256: string; created_by: string; created_at: Date}>(
        'SELECT version, seq, sha256, created_by, created_at FROM config_docs WHERE scope = $1 AND target = $2 AND name = $3 ORDER BY version DESC LIMIT 1',
        [scope, where.target, name],
      )
      const shadowed = scope === 'zone' ? await this.shadowed(tx, where.target, name) : []
      const current = newest[0]
      const base = {scope, target: where.target, name, sha256, bytes, shadowed}
      if (current && current.sha256 === sha256) {
        return {
          ...base,
          version: current.version,
          seq: current.seq,
          changed: false,
          created_by: current.created_by,
          created_at: current.created_at.toISOString(),
          nodes: [],
          message: `${where.target} already has this ${name} as v${current.version}: nothing stored, nothing sent`,
        }
      }
      const version = (current?.version ?? 0) + 1
      const {rows: inserted} = await tx.query<{seq: number}>(
        'INSERT INTO config_docs (scope, target, name, version, content, sha256, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq',
        [scope, where.target, name, version, canonical, sha256, actor.id, now],
      )
      const seq = inserted[0]!.seq
      // The nodes whose effective config this changes: their config version rises to this seq (a
      // node with its own document of this name keeps its version). Pending nodes are kept current
      // too, so they join with the right one; revoked nodes are out of the fleet.
      const {rows: moved} = await tx.query<{id: string; status: string; config_version: number}>(
        `UPDATE nodes n SET config_version = v.cv
           FROM (SELECT id, jil_node_config_version(id, zone) AS cv FROM nodes WHERE ${scope === 'zone' ? 'zone' : 'id'} = $1 AND status <> 'revoked') v
          WHERE n.id = v.id AND n.config_version <> v.cv
          RETURNING n.id, n.status, n.config_version`,
        [where.target],
      )
      moved.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      const active = moved.filter((n) => n.status === 'active').map((n) => n.id)
      const cmds = await this.commands.insert(tx, p, active, 'refresh')
      const commandOf = new Map(cmds.map((c) => [c.node_id, c.id]))
      const nodes: ConfigPushNode[] = moved.map((n) => ({node_id: n.id, config_version: n.config_version, command_id: commandOf.get(n.id) ?? null}))
      await this.ledger.append(tx, {
        actor,
        action: 'config.push',
        subject: scope === 'zone' ? `zone/${where.target}` : where.target,
        details: {scope, target: where.target, name, version, seq, sha256, bytes, from_version: current?.version ?? null, nodes: nodes.map((n) => n.node_id), refreshed: active.length, ...(shadowed.length ? {shadowed} : {})},
      })
      const sent = active.length ? `refresh sent to ${active.length} node${active.length === 1 ? '' : 's'}` : 'no active node to refresh'
      return {
        ...base,
        version,
        seq,
        changed: true,
        created_by: actor.id,
        created_at: now.toISOString(),
        nodes,
        message: `${name} v${version} pushed to ${where.target} (config version ${seq}); ${sent}${shadowed.length ? `; ${shadowed.length} keep${shadowed.length === 1 ? 's' : ''} its own ${name} (${shadowed.join(', ')})` : ''}`,
      }
    })
    this.commands.wake(out.nodes.filter((n) => n.command_id).map((n) => n.node_id))
    return out
  }

  /** `GET /v1/fleet/config`: a zone's current documents, or a node's effective ones. */
  async list(target: ConfigTarget): Promise<ConfigListing> {
    if ('zone' in target) {
      const zone = zoneFromPath(target.zone)
      if (!(await this.db.query('SELECT 1 FROM zones WHERE code = $1', [zone])).rowCount) throw new JilError('ZONE_UNKNOWN', `${zone} is not one of the zones`, {status: 404, hint: ZONES_HINT})
      const {rows} = await this.db.query<DocRow>(
        "SELECT DISTINCT ON (name) name, scope, version, seq, sha256, content, created_by, created_at FROM config_docs WHERE scope = 'zone' AND target = $1 ORDER BY name, version DESC",
        [zone],
      )
      return {scope: 'zone', target: zone, config_version: configVersionOf(rows), docs: rows.map(listed)}
    }
    const {rows: nodes} = await this.db.query<{zone: string; config_version: number}>('SELECT zone, config_version FROM nodes WHERE id = $1', [target.node])
    const node = nodes[0]
    if (!node) throw new JilError('NODE_UNKNOWN', `no node ${target.node}`, {status: 404, hint: 'see jil fleet nodes'})
    const {rows} = await this.db.query<DocRow>('SELECT name, scope, version, seq, sha256, content, created_by, created_at FROM jil_node_config_docs($1, $2) ORDER BY name', [target.node, node.zone])
    return {scope: 'node', target: target.node, config_version: node.config_version, docs: rows.map(listed)}
  }

  /**
   * Locks what the push changes, in one order (zone, then node): a zone push holds its zone row
   * exclusively, a node push shares it and holds its node row, so a zone push and a node push in
   * that zone never compute config versions over each other's uncommitted documents.
   */
  private async lockTarget(tx: Queryable, target: ConfigTarget): Promise<{target: string}> {
    if ('zone' in target) {
      const zone = zoneFromPath(target.zone)
      const {rowCount} = await tx.query('SELECT 1 FROM zones WHERE code = $1 FOR UPDATE', [zone])
      if (!rowCount) throw new JilError('ZONE_UNKNOWN', `${zone} is not one of the zones`, {status: 404, hint: ZONES_HINT})
      return {target: zone}
    }
    const id = target.node
    const {rows} = await tx.query<{zone: string}>('SELECT zone FROM nodes WHERE id = $1', [id])
    if (!rows[0]) throw new JilError('NODE_UNKNOWN', `no node ${id}`, {status: 404, hint: 'see jil fleet nodes'})
    await tx.query('SELECT 1 FROM zones WHERE code = $1 FOR SHARE', [rows[0].zone])
    const {rows: locked} = await tx.query<{status: string}>('SELECT status FROM nodes WHERE id = $1 FOR UPDATE', [id])
    const status = locked[0]!.status
    if (status === 'pending') throw new JilError('NODE_NOT_ACTIVE', `node ${id} has not joined yet: push its config once it has, or push to its zone`, {status: 409, hint: 'the node must join first (jil node join)'})
    if (status === 'revoked') throw new JilError('NODE_NOT_ACTIVE', `node ${id} is revoked: it takes no config`, {status: 409, hint: 'a revoked node is out of the fleet for good'})
    return {target: id}
  }

  /** Nodes of the zone (not revoked) with their own document of this name, which wins over the zone's. */
  private async shadowed(tx: Queryable, zone: string, name: string): Promise<string[]> {
    const {rows} = await tx.query<{id: string}>(
      "SELECT n.id FROM nodes n WHERE n.zone = $1 AND n.status <> 'revoked' AND EXISTS (SELECT 1 FROM config_docs d WHERE d.scope = 'node' AND d.target = n.id AND d.name = $2) ORDER BY n.id",
      [zone, name],
    )
    return rows.map((r) => r.id)
  }
}

function listed(r: DocRow): ConfigListing['docs'][number] {
  return {name: r.name, scope: r.scope, version: r.version, seq: r.seq, sha256: r.sha256, content: r.content, created_by: r.created_by, created_at: r.created_at.toISOString()}
}
