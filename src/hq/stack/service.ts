import {createHash} from 'node:crypto'

import {canonicalJson} from '../../shared/canonical.js'
import type {Clock} from '../../shared/clock.js'
import type {Db, Queryable} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import type {StackView} from '../../shared/hq-client.js'
import {compareVersions, parseVersion, type Track} from '../../shared/manifest.js'
import {normalizeSerial} from '../../shared/pki.js'
import type {Signer} from '../../shared/signing.js'
import {
  rollbackPayload,
  ROLLBACK_ROLES,
  signDocument,
  type DesiredService,
  type DesiredState,
  type RunMode,
  type StackRecord,
  type StackSpec,
  type UnsignedDesiredState,
} from '../../shared/stack.js'
import {stackSpecProblem} from '../../shared/stack-schema.js'
import {verifyUserSignature, type UserSignature} from '../../shared/user-signature.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {effectiveConfig} from '../fleet/config.js'
import {actorOf} from '../identity/service.js'

/** How long a node may act on a desired state before it must fetch a fresh one (it freezes after). */
export const DESIRED_STATE_TTL_MS = 3_600_000

/** Where a service's version on a track comes from: a pin (testnet, mainnet) or the newest devnet manifest. */
type Resolved = {version: string; digest: string; repository: string; pinned_by: string | null; pinned_at: string | null; rollback: UserSignature | null}

type PinRow = {service: string; version: string; digest: string; repository: string; rollback: UserSignature | null; pinned_by: string; pinned_at: Date}

/**
 * What nodes run (DESIGN.md §5): the signed stack spec of each track, the version pinned per service
 * on testnet and mainnet (devnet follows its newest signed manifest), and each node's signed desired
 * state with its monotonic sequence. Every change and its audit entry share one transaction.
 */
export class StackService {
  private readonly ttlMs: number

  constructor(
    private readonly db: Db,
    /** HQ's current image-signing key: a getter, so a rotation is honoured from the next document on. */
    private readonly signer: () => Signer,
    private readonly caPem: string,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
    o: {desiredStateTtlMs?: number} = {},
  ) {
    this.ttlMs = o.desiredStateTtlMs ?? DESIRED_STATE_TTL_MS
  }

  /** `jil hq stack set`: the next version of the track's spec, signed by HQ. */
  async setSpec(p: Principal, track: Track, spec: StackSpec): Promise<StackRecord> {
    const problem = stackSpecProblem(spec)
    if (problem) throw new JilError('STACK_INVALID', `the stack spec is not valid: ${problem}`, {status: 400, hint: 'give each service a unique name'})
    return this.db.transaction(async (tx) => {
      // Two concurrent sets compute the same version; the primary key makes the second a 409 CONFLICT.
      const {rows} = await tx.query<{version: number}>('SELECT version FROM stack_specs WHERE track = $1 ORDER BY version DESC LIMIT 1 FOR UPDATE', [track])
      const version = (rows[0]?.version ?? 0) + 1
      const createdAt = this.clock.now().toISOString()
      const record = await signDocument<Omit<StackRecord, 'key_id' | 'signature'>>(
        {kind: 'jil.stack/v1', track, version, spec, created_at: createdAt, created_by: actorName(p)},
        this.signer(),
      )
      await tx.query('INSERT INTO stack_specs (track, version, record, created_by, created_at) VALUES ($1, $2, $3, $4, $5)', [track, version, JSON.stringify(record), actorName(p), createdAt])
      await this.ledger.append(tx, {actor: actorOf(p), action: 'stack.set', subject: `stack/${track}`, details: {track, version, services: spec.services.map((s) => s.name)}})
      return record
    })
  }

  /**
   * `jil hq stack pin`: the version a service runs on testnet or mainnet. The version needs a live
   * manifest of the service's image on that track; a lower version than the current pin needs the
   * calling user's own signed rollback, which travels to nodes in their desired state.
   */
  async pin(p: Principal, track: Track, service: string, version: string, rollback?: UserSignature): Promise<StackView> {
    if (track === 'devnet') {
      throw new JilError('PIN_DEVNET', 'devnet has no pins: it runs the newest signed devnet manifest of each service', {
        status: 400,
        hint: 'sign a new version onto devnet (jil hq sign), or pin on testnet or mainnet',
      })
    }
    parseVersion(version)
    // Read before the transaction: the set of revoked signers only grows, so a stale read can only miss a revocation made at this instant.
    const revoked = rollback ? await this.revokedUserSerials() : new Set<string>()
    await this.db.transaction(async (tx) => {
      const record = await this.currentRecord(tx, track)
      if (!record) throw new JilError('STACK_UNSET', `${track} has no stack spec`, {status: 409, hint: `set one first: jil hq stack set --track ${track} FILE`})
      const spec = record.spec.services.find((s) => s.name === service)
      if (!spec) {
        throw new JilError('SERVICE_UNKNOWN', `${track}'s stack (v${record.version}) has no service ${service}`, {
          status: 404,
          hint: `services: ${record.spec.services.map((s) => s.name).join(', ')}`,
        })
      }
      const {rows: live} = await tx.query<{version: string; digest: string; repository: string; created_at: Date}>(
        "SELECT version, digest, body->>'repository' AS repository, created_at FROM manifests WHERE image = $1 AND track = $2 AND deprecated_at IS NULL",
        [spec.image, track],
      )
      // The same version signed twice (a rebuild): the later signature is the release.
      const target = live.filter((m) => compareVersions(m.version, version) === 0).sort((a, b) => b.created_at.getTime() - a.created_at.getTime())[0]
      if (!target) {
        throw new JilError('NOT_ON_TRACK', `${spec.image} ${version} has no live signed manifest on ${track}`, {
          status: 409,
          hint: `promote it first (jil hq promote IMAGE@DIGEST --to ${track}); jil hq images --track ${track} lists what is there`,
        })
      }
      const {rows: pins} = await tx.query<PinRow>('SELECT service, version, digest, repository, rollback, pinned_by, pinned_at FROM stack_pins WHERE track = $1 AND service = $2 FOR UPDATE', [track, service])
      const current = pins[0]
      if (current && current.digest === target.digest && current.version === target.version) return // already so: nothing to record
      const lower = current !== undefined && compareVersions(target.version, current.version) < 0
      if (lower) this.checkRollback(p, rollback, rollbackPayload(track, service, spec.image, target.digest, target.version), current.version, revoked)
      const now = this.clock.now()
      await tx.query(
        `INSERT INTO stack_pins (track, service, version, digest, repository, rollback, pinned_by, pinned_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (track, service) DO UPDATE SET version = EXCLUDED.version, digest = EXCLUDED.digest, repository = EXCLUDED.repository,
           rollback = EXCLUDED.rollback, pinned_by = EXCLUDED.pinned_by, pinned_at = EXCLUDED.pinned_at`,
        [track, service, target.version, target.digest, target.repository, lower ? JSON.stringify(rollback) : null, actorName(p), now],
      )
      await this.ledger.append(tx, {
        actor: actorOf(p),
        action: 'stack.pin',
        subject: `stack/${track}/${service}`,
        details: {track, service, version: target.version, digest: target.digest, from: current?.version ?? null, rollback: lower},
      })
    })
    return this.view(track)
  }

  /**
   * A downgrade needs the caller's own valid rollback signature for exactly this track, service,
   * image, digest and version (stack pins here; per-node rollbacks and rollouts' auto-revert too).
   */
  checkRollback(p: Principal, rollback: UserSignature | undefined, expected: ReturnType<typeof rollbackPayload>, from: string, revoked: Set<string>, hint?: string): void {
    if (!rollback) {
      throw new JilError('ROLLBACK_SIGNATURE_REQUIRED', `${expected.service} on ${expected.track} is pinned to ${from}; ${expected.version} is lower and needs a signed rollback`, {
        status: 409,
        hint: hint ?? `confirm the downgrade with your own key (ops-lead or admin): jil hq stack pin --track ${expected.track} ${expected.service} ${expected.version} --rollback`,
      })
    }
    const verified = verifyUserSignature(rollback, {caPem: this.caPem, now: this.clock.now(), purpose: 'rollback', roles: ROLLBACK_ROLES, isRevoked: (s) => revoked.has(normalizeSerial(s))})
    if (p.kind !== 'user' || verified.user !== p.name) {
      throw new JilError('ROLLBACK_NOT_YOURS', `the rollback is signed by ${verified.user}, not by the caller`, {status: 403, hint: 'sign the rollback with your own bundle'})
    }
    if (canonicalJson(rollback.payload) !== canonicalJson(expected)) {
      throw new JilError('ROLLBACK_MISMATCH', 'the rollback signature is not for this track, service, image, digest and version', {
        status: 400,
        hint: `sign ${canonicalJson(expected)}`,
      })
    }
  }

  /** `jil hq stack show`: the current record and the version each of its services runs on the track. */
  async view(track: Track): Promise<StackView> {
    const record = await this.currentRecord(this.db, track)
    const resolved = record ? await this.resolve(this.db, track, record.spec) : new Map<string, Resolved>()
    const versions: StackView['versions'] = {}
    for (const s of record?.spec.services ?? []) {
      const r = resolved.get(s.name)
      versions[s.name] = r ? {version: r.version, digest: r.digest, repository: r.repository, pinned_by: r.pinned_by, pinned_at: r.pinned_at} : null
    }
    return {track, stack: record ?? null, versions}
  }

  /**
   * A node's signed desired state: its track's current spec resolved to digests, its run mode and
   * config version. The sequence goes up exactly when the content changes, so a node polling an
   * unchanged state sees the same sequence with fresh issued_at/expires_at.
   */
  async desiredState(nodeId: string): Promise<DesiredState> {
    const unsigned = await this.db.transaction(async (tx): Promise<UnsignedDesiredState> => {
      // The node's row lock serialises its documents, so sequence order is computation order.
      const {rows} = await tx.query<{zone: string; track: Track; status: string; run_mode: RunMode; config_version: number}>(
        'SELECT zone, track, status, run_mode, config_version FROM nodes WHERE id = $1 FOR NO KEY UPDATE',
        [nodeId],
      )
      const node = rows[0]
      if (!node || node.status !== 'active') {
        throw new JilError('NODE_NOT_ACTIVE', `node ${nodeId} is not active`, {status: 403, hint: 'only a joined, unrevoked node gets a desired state'})
      }
      const {record, services, unresolved} = await this.nodeServices(tx, nodeId, node.track)
      const content = {
        kind: 'jil.desired-state/v1' as const,
        node_id: nodeId,
        zone: node.zone,
        track: node.track,
        run_mode: node.run_mode,
        config_version: node.config_version,
        stack_version: record?.version ?? 0,
        services,
        unresolved,
        config: await effectiveConfig(tx, nodeId, node.zone),
      }
      const hash = createHash('sha256').update(canonicalJson(content)).digest('hex')
      const now = this.clock.now()
      const inserted = await tx.query<{sequence: number}>(
        'INSERT INTO desired_state_sequences (node_id, sequence, content_hash, updated_at) VALUES ($1, 1, $2, $3) ON CONFLICT (node_id) DO NOTHING RETURNING sequence',
        [nodeId, hash, now],
      )
      let sequence = inserted.rows[0]?.sequence
      if (sequence === undefined) {
        const {rows: seq} = await tx.query<{sequence: number; content_hash: string}>('SELECT sequence, content_hash FROM desired_state_sequences WHERE node_id = $1 FOR UPDATE', [nodeId])
        sequence = seq[0]!.sequence
        if (seq[0]!.content_hash !== hash) {
          sequence += 1
          await tx.query('UPDATE desired_state_sequences SET sequence = $2, content_hash = $3, updated_at = $4 WHERE node_id = $1', [nodeId, sequence, hash, now])
        }
      }
      return {...content, sequence, issued_at: now.toISOString(), expires_at: new Date(now.getTime() + this.ttlMs).toISOString()}
    })
    return signDocument(unsigned, this.signer())
  }

  /**
   * What one node should run: its track's current spec resolved to digests, with the node's own pins
   * (a rollout's or a per-node rollback's) over the track's. A node pin whose manifest is no longer
   * live on the track, or is of another image than the spec names, is not served.
   */
  async nodeServices(q: Queryable, nodeId: string, track: Track): Promise<{record: StackRecord | undefined; services: DesiredService[]; unresolved: string[]}> {
    const record = await this.currentRecord(q, track)
    const resolved = record ? await this.resolve(q, track, record.spec) : new Map<string, Resolved>()
    if (record) {
      const {rows} = await q.query<PinRow & {image: string}>(
        `SELECT p.service, p.version, p.digest, p.repository, p.rollback, p.pinned_by, p.pinned_at, m.image FROM node_pins p
           JOIN manifests m ON m.digest = p.digest AND m.track = $2 AND m.deprecated_at IS NULL
          WHERE p.node_id = $1`,
        [nodeId, track],
      )
      const images = new Map(record.spec.services.map((s) => [s.name, s.image]))
      for (const pin of rows) {
        if (images.get(pin.service) !== pin.image) continue
        resolved.set(pin.service, {version: pin.version, digest: pin.digest, repository: pin.repository, pinned_by: pin.pinned_by, pinned_at: pin.pinned_at.toISOString(), rollback: pin.rollback})
      }
    }
    const services: DesiredService[] = []
    const unresolved: string[] = []
    for (const s of record?.spec.services ?? []) {
      const r = resolved.get(s.name)
      if (!r) unresolved.push(s.name)
      else services.push({...s, repository: r.repository, digest: r.digest, version: r.version, ...(r.rollback ? {rollback: r.rollback, ...(r.pinned_at ? {rollback_at: r.pinned_at} : {})} : {})})
    }
    return {record, services, unresolved}
  }

  private async currentRecord(q: Queryable, track: Track): Promise<StackRecord | undefined> {
    const {rows} = await q.query<{record: StackRecord}>('SELECT record FROM stack_specs WHERE track = $1 ORDER BY version DESC LIMIT 1', [track])
    return rows[0]?.record
  }

  /**
   * The version each service of a spec runs on a track. Devnet: the newest live devnet manifest of
   * its image. Testnet/mainnet: its pin, as long as the pinned manifest is live and of the service's
   * image (a deprecated one is not served: the service is unresolved until it is pinned again).
   */
  private async resolve(q: Queryable, track: Track, spec: StackSpec): Promise<Map<string, Resolved>> {
    const out = new Map<string, Resolved>()
    if (track === 'devnet') {
      const images = [...new Set(spec.services.map((s) => s.image))]
      const {rows} = await q.query<{image: string; version: string; digest: string; repository: string; created_at: Date}>(
        "SELECT image, version, digest, body->>'repository' AS repository, created_at FROM manifests WHERE track = 'devnet' AND deprecated_at IS NULL AND image = ANY($1::text[])",
        [images],
      )
      const newest = new Map<string, (typeof rows)[number]>()
      for (const m of rows) {
        const best = newest.get(m.image)
        const c = best ? compareVersions(m.version, best.version) : 1
        if (c > 0 || (c === 0 && m.created_at > best!.created_at)) newest.set(m.image, m)
      }
      for (const s of spec.services) {
        const m = newest.get(s.image)
        if (m) out.set(s.name, {version: m.version, digest: m.digest, repository: m.repository, pinned_by: null, pinned_at: null, rollback: null})
      }
      return out
    }
    const {rows} = await q.query<PinRow & {image: string}>(
      `SELECT p.service, p.version, p.digest, p.repository, p.rollback, p.pinned_by, p.pinned_at, m.image FROM stack_pins p
         JOIN manifests m ON m.digest = p.digest AND m.track = p.track AND m.deprecated_at IS NULL
        WHERE p.track = $1`,
      [track],
    )
    const pins = new Map(rows.map((r) => [r.service, r]))
    for (const s of spec.services) {
      const pin = pins.get(s.name)
      // A spec that moved the service to another image leaves the old pin behind: not this image, not served.
      if (pin && pin.image === s.image) out.set(s.name, {version: pin.version, digest: pin.digest, repository: pin.repository, pinned_by: pin.pinned_by, pinned_at: pin.pinned_at.toISOString(), rollback: pin.rollback})
    }
    return out
  }

  /** Serials of revoked user certificates (a rollback signed by one of them is refused). */
  async revokedUserSerials(): Promise<Set<string>> {
    const {rows} = await this.db.query<{serial: string}>("SELECT serial FROM certificates WHERE revoked_at IS NOT NULL AND kind = 'user'")
    return new Set(rows.map((r) => r.serial))
  }
}

function actorName(p: Principal): string {
  return p.kind === 'user' ? p.name : p.id
}
