import {ALERT_ID_PATTERN, SILENCE_ID_PATTERN, SILENCE_MAX_S, SILENCE_MIN_S, type AlertView, type SilenceView} from '../shared/alerts.js'
import {usageError} from '../shared/errors.js'
import {parseDuration} from '../node/settings.js'
import {table} from './table.js'

// What `jil alerts …` share: argument checks before anything is sent, and the tables.

export function parseAlertId(value: string): string {
  const id = value.toLowerCase()
  if (!ALERT_ID_PATTERN.test(id)) throw usageError('ALERT_ID_INVALID', `${JSON.stringify(value)} is not an alert id`, 'alert ids look like al_… (see jil alerts list)')
  return id
}

export function parseSilenceId(value: string): string {
  const id = value.toLowerCase()
  if (!SILENCE_ID_PATTERN.test(id)) throw usageError('SILENCE_ID_INVALID', `${JSON.stringify(value)} is not a silence id`, 'silence ids look like si_… (see jil alerts silences)')
  return id
}

/** `--for 2h` → seconds, within what HQ accepts (1 minute to 90 days). */
export function parseSilenceFor(value: string): number {
  const s = Math.round(parseDuration(value, '--for') / 1000)
  if (s < SILENCE_MIN_S || s > SILENCE_MAX_S) {
    throw usageError('DURATION_INVALID', `--for ${JSON.stringify(value)} is outside 1m to ${SILENCE_MAX_S / 86_400}d`, 'silence for a while, e.g. --for 2h; end it early with jil alerts unsilence ID')
  }
  return s
}

export function alertsTable(alerts: readonly AlertView[]): string {
  return table(
    alerts.map((a) => ({...a, state: a.silenced && a.state !== 'resolved' ? `${a.state} (silenced)` : a.state})),
    [
      {key: 'id', header: 'id'},
      {key: 'severity', header: 'severity'},
      {key: 'state', header: 'state'},
      {key: 'rule', header: 'rule'},
      {key: 'summary', header: 'summary'},
      {key: 'first_seen', header: 'since'},
    ],
  )
}

export function silencesTable(silences: readonly SilenceView[]): string {
  return table(
    silences.map((s) => ({...s, node_id: s.node_id ?? 'all nodes', state: s.active ? 'active' : 'expired'})),
    [
      {key: 'id', header: 'id'},
      {key: 'rule', header: 'rule'},
      {key: 'node_id', header: 'node'},
      {key: 'state', header: 'state'},
      {key: 'expires_at', header: 'until'},
      {key: 'created_by', header: 'by'},
      {key: 'reason', header: 'reason'},
    ],
  )
}
