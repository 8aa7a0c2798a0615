
import {ALERT_RULES, isAlertRule, SILENCE_MAX_S, SILENCE_MIN_S, type AlertQuery, type AlertView, type SilenceRequest, type SilenceView} from '../../shared/alerts.js'
import type {Clock} from '../../shared/clock.js'
import type {Db} from '../../shared/db/types.js'
import {JilError} from '../../shared/errors.js'
import {newId} from '../../shared/ids.js'
import type {AuditLedger} from '../audit/ledger.js'
import type {Principal} from '../auth.js'
import {notifyChanged} from '../events/hub.js'
import {actorOf} from '../identity/service.js'

const ALERT_COLUMNS = 'id, fingerprint, rule, subject, node_id, severity, state, summary, details, silenced, first_seen, last_seen, resolved_at, acked_by, acked_at'

type AlertRow = Omit<AlertView, 'first_seen' | 'last_seen' | 'resolved_at' | 'acked_at'> & {first_seen: Date; last_seen: Date; resolved_at: Date | null; acked_at: Date | null}
type SilenceRow = Omit<SilenceView, 'created_at' | 'expires_at' | 'active'> & {created_at: Date; expires_at: Date}

const iso = (d: Date | null) => d?.toISOString() ?? null

function toAlert(r: AlertRow): AlertView {
  return {...r, first_seen: r.first_seen.toISOString(), last_seen: r.last_seen.toISOString(), resolved_at: iso(r.resolved_at), acked_at: iso(r.acked_at)}
}

function toSilence(r: SilenceRow, now: Date): SilenceView {
  return {...r, created_at: r.created_at.toISOString(), expires_at: r.expires_at.toISOString(), active: r.expires_at > now}
}

export function newSilenceId(): string {
  return newId('si')
}

/**
 * What users do with alerts: list them, ack one, silence a rule (on a node or fleet-wide) for a
 * while, and end a silence early. Each change and its audit entry share one transaction. Opening
 * and resolving alerts is the evaluator's alone.
 */
export class AlertService {
  constructor(
    private readonly db: Db,
    private readonly ledger: AuditLedger,
    private readonly clock: Clock,
  ) {}

  /** Newest first (by when the condition began); without a state, the alerts not resolved. */
  async list(q: AlertQuery): Promise<AlertView[]> {
    const {rows} = await this.db.query<AlertRow>(
      `SELECT ${ALERT_COLUMNS} FROM alerts
        WHERE (CASE WHEN $1::text IS NULL THEN state <> 'resolved' ELSE state = $1 END)
          AND ($2::text IS NULL OR severity = $2) AND ($3::text IS NULL OR rule = $3) AND ($4::text IS NULL OR node_id = $4)
        ORDER BY first_seen DESC, id LIMIT $5`,
      [q.state ?? null, q.severity ?? null, q.rule ?? null, q.node ?? null, q.limit ?? 500],
    )
    return rows.map(toAlert)
  }

  /** The alerts with these ids, as list() shows them (the live stream's view of changed alerts). */
  async byIds(ids: readonly string[]): Promise<AlertView[]> {
    if (ids.length === 0) return []
    const {rows} = await this.db.query<AlertRow>(`SELECT ${ALERT_COLUMNS} FROM alerts WHERE id = ANY($1::text[]) ORDER BY first_seen DESC, id`, [ids])
    return rows.map(toAlert)
  }

  async get(id: string): Promise<AlertView> {
    const {rows} = await this.db.query<AlertRow>(`SELECT ${ALERT_COLUMNS} FROM alerts WHERE id = $1`, [id])
    if (!rows[0]) throw unknownAlert(id)
    return toAlert(rows[0])
  }

  /** Someone took it: open → acked (an acked alert stays acked until it resolves). Acking it again changes nothing. */
  async ack(p: Principal, id: string): Promise<AlertView> {
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<AlertRow>(`SELECT ${ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE`, [id])
      const a = rows[0]
      if (!a) throw unknownAlert(id)
      if (a.state === 'resolved') {
        throw new JilError('ALERT_RESOLVED', `alert ${id} resolved at ${a.resolved_at!.toISOString()}: its condition cleared`, {status: 409, hint: 'nothing to ack; jil alerts list shows the open ones'})
      }
      if (a.state === 'acked') return toAlert(a)
      const now = this.clock.now()
      const by = p.kind === 'user' ? p.name : p.id
      const {rows: updated} = await tx.query<AlertRow>(`UPDATE alerts SET state = 'acked', acked_by = $2, acked_at = $3 WHERE id = $1 RETURNING ${ALERT_COLUMNS}`, [id, by, now])
      await notifyChanged(tx, 'alerts', [id])
      await this.ledger.append(tx, {actor: actorOf(p), action: 'alert.ack', subject: id, details: {fingerprint: a.fingerprint, rule: a.rule, subject: a.subject, severity: a.severity}})
      return toAlert(updated[0]!)
    })
  }

  /** Holds back the notifications of a rule's alerts (on one node, or every node) until it expires. */
  async silence(p: Principal, req: SilenceRequest): Promise<SilenceView> {
    if (!isAlertRule(req.rule)) {
      throw new JilError('RULE_UNKNOWN', `no alert rule ${JSON.stringify(req.rule)}`, {status: 400, hint: `rules: ${ALERT_RULES.join(', ')}`, details: {field: 'rule'}})
    }
    if (!Number.isInteger(req.for_s) || req.for_s < SILENCE_MIN_S || req.for_s > SILENCE_MAX_S) {
      throw new JilError('SILENCE_DURATION_INVALID', `a silence lasts from ${SILENCE_MIN_S} s to ${SILENCE_MAX_S / 86_400} days, not ${req.for_s} s`, {status: 400, hint: 'e.g. --for 2h', details: {field: 'for_s'}})
    }
    const rule = req.rule
    const now = this.clock.now()
    const expires = new Date(now.getTime() + req.for_s * 1000)
    return this.db.transaction(async (tx) => {
      if (req.node_id !== undefined) {
        const {rows} = await tx.query('SELECT 1 FROM nodes WHERE id = $1', [req.node_id])
        if (rows.length === 0) throw new JilError('NODE_UNKNOWN', `no node ${req.node_id}`, {status: 404, hint: 'see jil fleet nodes'})
      }
      const id = newSilenceId()
      const by = p.kind === 'user' ? p.name : p.id
      const {rows} = await tx.query<SilenceRow>(
        `INSERT INTO alert_silences (id, rule, node_id, reason, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, rule, node_id, reason, created_by, created_at, expires_at`,
        [id, rule, req.node_id ?? null, req.reason, by, now, expires],
      )
      await this.ledger.append(tx, {actor: actorOf(p), action: 'alert.silence', subject: id, details: {rule, node_id: req.node_id ?? null, reason: req.reason, expires_at: expires.toISOString()}})
      return toSilence(rows[0]!, now)
    })
  }

  /** The silences in force (with `all`, the expired ones too), newest first. */
  async silences(o: {all?: boolean | undefined} = {}): Promise<SilenceView[]> {
    const now = this.clock.now()
    const {rows} = await this.db.query<SilenceRow>(
      'SELECT id, rule, node_id, reason, created_by, created_at, expires_at FROM alert_silences WHERE $1::boolean OR expires_at > $2 ORDER BY created_at DESC, id',
      [o.all ?? false, now],
    )
    return rows.map((r) => toSilence(r, now))
  }

  /** Ends a silence now: matching alerts still true are notified by the next evaluation. */
  async unsilence(p: Principal, id: string): Promise<SilenceView> {
    const now = this.clock.now()
    return this.db.transaction(async (tx) => {
      const {rows} = await tx.query<SilenceRow>('DELETE FROM alert_silences WHERE id = $1 RETURNING id, rule, node_id, reason, created_by, created_at, expires_at', [id])
      const s = rows[0]
      if (!s) throw new JilError('SILENCE_UNKNOWN', `no silence ${id}`, {status: 404, hint: 'see jil alerts silences --all'})
      await this.ledger.append(tx, {actor: actorOf(p), action: 'alert.unsilence', subject: id, details: {rule: s.rule, node_id: s.node_id, was_active: s.expires_at > now}})
      return {...toSilence(s, now), active: false}
    })
  }
}

function unknownAlert(id: string): JilError {
  return new JilError('ALERT_UNKNOWN', `no alert ${id}`, {status: 404, hint: 'see jil alerts list (--state resolved for past ones)'})
}
