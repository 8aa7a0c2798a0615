import {createHash} from 'node:crypto'

import type {AlertRule, AlertSeverity, AlertState, AlertView} from '../../shared/alerts.js'
import type {Clock} from '../../shared/clock.js'
import {Leadership} from '../../shared/db/leadership.js'
import {LOCKS, type Db, type Queryable} from '../../shared/db/types.js'
import {newId} from '../../shared/ids.js'
import {PassLoop} from '../../shared/loop.js'
import type {AuditLedger} from '../audit/ledger.js'
import {notifyChanged} from '../events/hub.js'
import type {AlertMetrics} from './metrics.js'
import type {RegistryScan} from './registry-scan.js'
import {DEFAULT_ALERT_CONFIG, evaluate, type AlertConfig, type AlertFinding} from './rules.js'
import {loadSnapshot, type TrackResolver} from './snapshot.js'

/**
 * Where notifications go: called inside the evaluator's transaction when an alert opens (or its
 * silence ends while it is still true) and when a notified alert resolves. A webhook outbox writes
 * its deliveries with `tx`, so they commit exactly when the alert's change does. The default does nothing.
 */
export interface AlertSink {
  opened(tx: Queryable, alert: AlertView): Promise<void>
  resolved(tx: Queryable, alert: AlertView): Promise<void>
}

export const NO_ALERT_SINK: AlertSink = {opened: async () => {}, resolved: async () => {}}

export type AlertEvaluatorOptions = {
  /** How often the fleet is evaluated (default 60 s). */
  everyMs?: number
  /** Rule thresholds over the defaults. */
  config?: Partial<AlertConfig>
  sink?: AlertSink
  metrics?: AlertMetrics
  onError?: (err: unknown) => void
  /** A timer tick found the previous evaluation still running and skipped (it is never stacked). */
  onSkip?: () => void
  /** Where a silence's end is recorded, in the evaluation's transaction (HQ passes its ledger; without one, ends go unaudited). */
  ledger?: Pick<AuditLedger, 'append'>
  /** How long resolved alerts, and silences that ran out, are kept (default 30 days). */
  retentionMs?: number
  /** The registry's digests for the image-unsigned rule (HQ with a registry); evaluations use its last completed walk and never wait for one. */
  registryScan?: Pick<RegistryScan, 'current'>
}

/** Resolved alerts and ended silences are kept this long by default, then pruned. */
export const ALERT_RETENTION_MS = 30 * 86_400_000
/** At most this many rows are pruned per evaluation, so a first run over a long history stays short. */
const PRUNE_BATCH = 5_000
const RANK: Record<AlertSeverity, number> = {warning: 1, critical: 2}

/** What one tick did. `evaluated: false`: another replica holds the lock (or the evaluator stopped). */
export type EvaluationResult = {
  evaluated: boolean
  /** Nodes loaded in full because some rule may fire on them (the others run exactly as desired, within every threshold). */
  candidates: number
  findings: number
  opened: number
  updated: number
  resolved: number
  /** Opening, escalation and resolution notifications handed to the sink. */
  notified: number
  /** Silences that ran out since the last evaluation (each audited once). */
  silencesEnded: number
  /** Resolved alerts and ended silences deleted for being older than the retention. */
  pruned: number
  ms: number
}

const IDLE: EvaluationResult = {evaluated: false, candidates: 0, findings: 0, opened: 0, updated: 0, resolved: 0, notified: 0, silencesEnded: 0, pruned: 0, ms: 0}

export function newAlertId(): string {
  return newId('al')
}

type OpenRow = {
  id: string
  fingerprint: string
  rule: AlertRule
  subject: string
  node_id: string | null
  severity: AlertSeverity
  state: AlertState
  silenced: boolean
  notified: boolean
  content_hash: string
  first_seen: Date
  acked_by: string | null
  acked_at: Date | null
}

type ResolvedRow = Omit<OpenRow, 'state' | 'content_hash'> & {summary: string; details: Record<string, unknown>; last_seen: Date}

/**
 * The alert loop (issue 8): every minute, on exactly one HQ replica (the advisory lock, held while
 * this replica serves, so evaluations never interleave), loads the fleet in a few set-wise queries,
 * runs the rules in one pass, and in one transaction opens new alerts, refreshes open ones and
 * resolves those whose condition cleared. Silenced alerts are stored but not notified; one whose
 * silence ended while it is still true is notified then, and one whose severity rose (warning →
 * critical) is notified again. A silence that ran out is audited once; resolved alerts and ended
 * silences older than the retention are pruned. One owned, single-flight timer: an
 * overlapping tick is skipped, stop() waits for the evaluation in flight.
 */
export class AlertEvaluator {
  readonly config: AlertConfig
  private readonly loop: PassLoop<EvaluationResult>
  private readonly leadership: Leadership
  private readonly sink: AlertSink

  constructor(
    private readonly db: Db,
    private readonly stacks: TrackResolver,
    private readonly clock: Clock,
    private readonly o: AlertEvaluatorOptions = {},
  ) {
    this.config = {...DEFAULT_ALERT_CONFIG, ...o.config}
    this.sink = o.sink ?? NO_ALERT_SINK
    this.leadership = new Leadership(db, LOCKS.alerts)
    this.loop = new PassLoop(() => this.run(), {
      everyMs: o.everyMs ?? 60_000,
      overlap: 'join',
      ...(o.onError ? {onError: o.onError} : {}),
      ...(o.onSkip ? {onOverlap: o.onSkip} : {}),
    })
  }

  start(): void {
    this.loop.start()
  }

  /** One evaluation now (tests move the clock, then tick); joins the one in flight if there is one. */
  tick(): Promise<EvaluationResult> {
    return this.loop.tick()
  }

  /** Stops the timer, waits for the evaluation in flight, and hands the lock to another replica. */
  async stop(): Promise<void> {
    await this.loop.stop()
    await this.leadership.release()
  }

  /** Whether this evaluator holds the lock (is the replica that evaluates). */
  get leading(): boolean {
    return this.leadership.held
  }

  private async run(): Promise<EvaluationResult> {
    if (this.loop.stopped) return IDLE
    const lock = await this.leadership.acquire()
    if (!lock) {
      this.o.metrics?.evaluations.inc({outcome: 'standby'})
      return IDLE
    }
    const started = performance.now()
    try {
      const now = this.clock.now()
      // Only the replica holding the lock walks the registry (current() starts a walk when one is due).
      const snapshot = await loadSnapshot(this.db, this.stacks, now, this.config, this.o.registryScan?.current()?.digests)
      const findings = evaluate(snapshot, this.config, now)
      // On the lock's own session: if it (and so the lock) is lost, this work is lost with it.
      const r = await lock.transaction((tx) => this.store(tx, findings, now))
      const ms = performance.now() - started
      this.o.metrics?.evaluationSeconds.observe(ms / 1000)
      this.o.metrics?.evaluations.inc({outcome: 'ok'})
      return {evaluated: true, candidates: snapshot.nodes.length, findings: findings.length, ...r, ms}
    } catch (err) {
      this.o.metrics?.evaluations.inc({outcome: 'failed'})
      // The lock's session may be what failed: let go, so this or another replica takes over afresh.
      await this.leadership.release()
      throw err
    }
  }

  /** Opens, refreshes and resolves, in one transaction, and hands notifications to the sink in it. */
  private async store(tx: Queryable, findings: AlertFinding[], now: Date): Promise<Omit<EvaluationResult, 'evaluated' | 'candidates' | 'findings' | 'ms'>> {
    const {rows: open} = await tx.query<OpenRow>(
      `SELECT id, fingerprint, rule, subject, node_id, severity, state, silenced, notified, content_hash, first_seen, acked_by, acked_at
         FROM alerts WHERE state <> 'resolved' FOR UPDATE`,
    )
    const {rows: silences} = await tx.query<{rule: string; node_id: string | null}>('SELECT rule, node_id FROM alert_silences WHERE expires_at > $1', [now])
    const silencedKeys = new Set(silences.map((s) => (s.node_id === null ? s.rule : `${s.rule}\0${s.node_id}`)))
    const isSilenced = (rule: string, nodeId: string | null) => silencedKeys.has(rule) || (nodeId !== null && silencedKeys.has(`${rule}\0${nodeId}`))

    const byFingerprint = new Map(open.map((a) => [a.fingerprint, a]))
    const seen = new Set<string>()
    const inserts: {f: AlertFinding; id: string; silenced: boolean; firstSeen: Date; hash: string}[] = []
    // Changed content or silence: rewritten. The rest: only last_seen moves.
    const changed: {a: OpenRow; f: AlertFinding; silenced: boolean; hash: string}[] = []
    const same: OpenRow[] = []
    for (const f of findings) {
      if (seen.has(f.fingerprint)) continue // a rule fires once per subject; never twice in one statement
      seen.add(f.fingerprint)
      const silenced = isSilenced(f.rule, f.nodeId)
      const hash = contentHash(f)
      const a = byFingerprint.get(f.fingerprint)
      if (!a) inserts.push({f, id: newAlertId(), silenced, firstSeen: f.since && f.since < now ? f.since : now, hash})
      else if (a.content_hash !== hash || a.silenced !== silenced) changed.push({a, f, silenced, hash})
      else same.push(a)
    }
    const cleared = open.filter((a) => !seen.has(a.fingerprint)).map((a) => a.id)

    if (inserts.length > 0) {
      await tx.query(
        `INSERT INTO alerts (id, fingerprint, rule, subject, node_id, severity, state, summary, details, silenced, notified, content_hash, first_seen, last_seen)
         SELECT id, fingerprint, rule, subject, node_id, severity, 'open', summary, details::jsonb, silenced, NOT silenced, content_hash, first_seen, $1
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bool[], $11::text[], $12::timestamptz[])
             AS x(id, fingerprint, rule, subject, node_id, severity, summary, details, silenced, content_hash, first_seen)`,
        [
          now,
          inserts.map((i) => i.id),
          inserts.map((i) => i.f.fingerprint),
          inserts.map((i) => i.f.rule),
          inserts.map((i) => i.f.subject),
          inserts.map((i) => i.f.nodeId),
          inserts.map((i) => i.f.severity),
          inserts.map((i) => i.f.summary),
          inserts.map((i) => JSON.stringify(i.f.details)),
          inserts.map((i) => i.silenced),
          inserts.map((i) => i.hash),
          inserts.map((i) => i.firstSeen),
        ],
      )
    }
    if (changed.length > 0) {
      await tx.query(
        `UPDATE alerts a SET last_seen = $1, severity = u.severity, summary = u.summary, details = u.details::jsonb, content_hash = u.content_hash,
                silenced = u.silenced, notified = a.notified OR NOT u.silenced
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[]) AS u(id, severity, summary, details, content_hash, silenced)
          WHERE a.id = u.id`,
        [now, changed.map((u) => u.a.id), changed.map((u) => u.f.severity), changed.map((u) => u.f.summary), changed.map((u) => JSON.stringify(u.f.details)), changed.map((u) => u.hash), changed.map((u) => u.silenced)],
      )
    }
    if (same.length > 0) await tx.query('UPDATE alerts SET last_seen = $1 WHERE id = ANY($2::text[])', [now, same.map((a) => a.id)])
    const resolved = cleared.length
      ? (
          await tx.query<ResolvedRow>(
            `UPDATE alerts SET state = 'resolved', resolved_at = $1 WHERE id = ANY($2::text[])
             RETURNING id, fingerprint, rule, subject, node_id, severity, summary, details, silenced, notified, first_seen, last_seen, acked_by, acked_at`,
            [now, cleared],
          )
        ).rows
      : []

    let notified = 0
    for (const i of inserts) {
      if (i.silenced) continue
      await this.sink.opened(tx, view({...i.f, id: i.id, state: 'open', silenced: false, first_seen: i.firstSeen, last_seen: now, resolved_at: null, acked_by: null, acked_at: null}))
      notified++
    }
    for (const u of changed) {
      if (u.silenced) continue
      // Held back by a silence that has ended, the condition still true: notify now. Or notified
      // before, and it has grown worse (warning → critical): notify again, so a pager that let a
      // warning wait hears of it (PagerDuty updates the incident of the same dedup_key).
      if (u.a.notified && RANK[u.f.severity] <= RANK[u.a.severity]) continue
      await this.sink.opened(tx, view({...u.f, id: u.a.id, state: u.a.state, silenced: false, first_seen: u.a.first_seen, last_seen: now, resolved_at: null, acked_by: u.a.acked_by, acked_at: u.a.acked_at}))
      notified++
    }
    for (const a of resolved) {
      if (!a.notified) continue
      await this.sink.resolved(tx, view({...a, nodeId: a.node_id, state: 'resolved', resolved_at: now}))
      notified++
    }
    const silencesEnded = await this.auditEndedSilences(tx, now)
    const pruned = await this.prune(tx, now)
    await notifyChanged(tx, 'alerts', [...inserts.map((i) => i.id), ...changed.map((u) => u.a.id), ...resolved.map((a) => a.id)]) // the live stream; `same` only moved last_seen
    return {opened: inserts.length, updated: changed.length + same.length, resolved: resolved.length, notified, silencesEnded, pruned}
  }

  /** Silences expire by themselves: the first evaluation after one ran out records that in the ledger. */
  private async auditEndedSilences(tx: Queryable, now: Date): Promise<number> {
    const ledger = this.o.ledger
    if (!ledger) return 0
    const {rows} = await tx.query<{id: string; rule: string; node_id: string | null; reason: string; created_by: string; expires_at: Date}>(
      `UPDATE alert_silences SET expiry_audited_at = $1 WHERE expiry_audited_at IS NULL AND expires_at <= $1
       RETURNING id, rule, node_id, reason, created_by, expires_at`,
      [now],
    )
    for (const s of rows.sort((a, b) => a.expires_at.getTime() - b.expires_at.getTime() || a.id.localeCompare(b.id))) {
      await ledger.append(tx, {
        actor: {type: 'hq', id: 'alerts'},
        action: 'alert.silence.expired',
        subject: s.id,
        details: {rule: s.rule, node_id: s.node_id, reason: s.reason, created_by: s.created_by, expired_at: s.expires_at.toISOString()},
      })
    }
    return rows.length
  }

  /** History has a horizon: resolved alerts and ended (and audited) silences older than the retention go. */
  private async prune(tx: Queryable, now: Date): Promise<number> {
    const before = new Date(now.getTime() - (this.o.retentionMs ?? ALERT_RETENTION_MS))
    const alerts = await tx.query(
      `DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE state = 'resolved' AND resolved_at < $1 ORDER BY resolved_at LIMIT ${PRUNE_BATCH})`,
      [before],
    )
    const silences = await tx.query(
      `DELETE FROM alert_silences WHERE expires_at < $1 AND (expiry_audited_at IS NOT NULL OR $2::boolean)`,
      [before, !this.o.ledger],
    )
    return alerts.rowCount + silences.rowCount
  }
}

/** What an evaluation compares to decide whether an open alert's row needs rewriting. */
function contentHash(f: AlertFinding): string {
  return createHash('sha256').update(`${f.severity}\0${f.summary}\0${JSON.stringify(f.details)}`).digest('base64url')
}

type ViewInput = {
  id: string
  fingerprint: string
  rule: AlertRule
  subject: string
  nodeId: string | null
  severity: AlertSeverity
  state: AlertState
  summary: string
  details: Record<string, unknown>
  silenced: boolean
  first_seen: Date
  last_seen: Date
  resolved_at: Date | null
  acked_by: string | null
  acked_at: Date | null
}

function view(a: ViewInput): AlertView {
  return {
    id: a.id,
    fingerprint: a.fingerprint,
    rule: a.rule,
    subject: a.subject,
    node_id: a.nodeId,
    severity: a.severity,
    state: a.state,
    summary: a.summary,
    details: a.details,
    silenced: a.silenced,
    first_seen: a.first_seen.toISOString(),
    last_seen: a.last_seen.toISOString(),
    resolved_at: a.resolved_at?.toISOString() ?? null,
    acked_by: a.acked_by,
    acked_at: a.acked_at?.toISOString() ?? null,
  }
}
