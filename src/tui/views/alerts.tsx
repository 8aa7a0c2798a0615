import {Box, Text} from 'ink'
import {useRef, useState} from 'react'

import type {AlertView, SilenceRequest} from '../../shared/alerts.js'
import type {ActionState} from '../hooks/use-action.js'
import {clamp, fit, windowAt, type AlertTab} from '../model.js'
import {DialogLine, Hints, Line, ResultLine, SEVERITY_COLOR, tone, useDialog, useKeys, type Frame} from './common.js'

export type AlertsProps = Frame & {
  /** The alerts of every state; the view shows one tab at a time. */
  alerts: Record<AlertTab, readonly AlertView[]>
  readonly: boolean
  result: ActionState
  onAck: (alert: AlertView) => void
  onSilence: (req: SilenceRequest) => void
}

const TABS: AlertTab[] = ['open', 'acked', 'resolved']
/** Silence lengths offered, within what HQ accepts (1 minute to 90 days). */
export const SILENCE_CHOICES = [
  {label: '1h', s: 3600},
  {label: '4h', s: 4 * 3600},
  {label: '24h', s: 86_400},
  {label: '7d', s: 7 * 86_400},
] as const

/**
 * Alerts by state (Tab or ←/→ switches open/acked/resolved). `a` acks the selected alert, `x`
 * silences its rule on its node (or fleet-wide) for a chosen time with a reason.
 */
export function Alerts({alerts, width, height, colors, active, readonly, result, onAck, onSilence}: AlertsProps) {
  const [tab, setTab] = useState<AlertTab>('open')
  const [cursor, setCursor] = useState(0)
  const top = useRef(0)
  const dialogs = useDialog()
  const rows = alerts[tab]
  const sel = clamp(cursor, rows.length)
  const bodyHeight = Math.max(1, height - 5)
  const win = windowAt(rows.length, sel, bodyHeight, top.current)
  top.current = win.top

  useKeys((input, key) => {
    if (dialogs.handle(input, key)) return true
    if (key.tab || key.rightArrow) {
      setTab((t) => TABS[(TABS.indexOf(t) + 1) % TABS.length]!)
      setCursor(0)
    } else if (key.leftArrow) {
      setTab((t) => TABS[(TABS.indexOf(t) + TABS.length - 1) % TABS.length]!)
      setCursor(0)
    } else if (key.downArrow || input === 'j') setCursor(clamp(sel + 1, rows.length))
    else if (key.upArrow || input === 'k') setCursor(clamp(sel - 1, rows.length))
    if (readonly) return
    const a = rows[sel]
    if (!a) return
    if (input === 'a' && a.state === 'open') {
      dialogs.open({kind: 'confirm', question: `Ack ${a.id} (${a.rule} ${a.subject}): you are on it?`, onYes: () => onAck(a)})
    } else if (input === 'x' && a.state !== 'resolved') {
      const scopes = a.node_id ? [`on ${a.node_id}`, 'on every node'] : ['on every node']
      dialogs.open({
        kind: 'choice',
        label: `Silence ${a.rule} for`,
        options: SILENCE_CHOICES.map((c) => c.label),
        index: 0,
        onPick: (d) =>
          dialogs.open({
            kind: 'choice',
            label: `Silence ${a.rule} for ${SILENCE_CHOICES[d]!.label}`,
            options: scopes,
            index: 0,
            onPick: (s) =>
              dialogs.open({
                kind: 'text',
                label: 'Why (for the audit ledger and the next person on call)',
                value: '',
                onSubmit: (reason) => onSilence({rule: a.rule, ...(a.node_id && s === 0 ? {node_id: a.node_id} : {}), for_s: SILENCE_CHOICES[d]!.s, reason}),
              }),
          }),
      })
    }
  }, active)

  const counts = TABS.map((t) => (t === tab ? `[${t} ${alerts[t].length}]` : ` ${t} ${alerts[t].length} `)).join(' ')
  const summaryWidth = Math.max(10, width - 2 - 9 - 2 - 16 - 2 - 14 - 2 - 20 - 2)
  return (
    <Box flexDirection="column" width={width}>
      <Line width={width}>{counts}</Line>
      <Line width={width} bold>{`  ${fit('SEVERITY', 9)}  ${fit('RULE', 16)}  ${fit('SUBJECT', 14)}  ${fit('LAST SEEN', 20)}  SUMMARY`}</Line>
      {rows.length === 0 && <Line width={width}>{`  no ${tab} alerts`}</Line>}
      {rows.slice(win.top, win.end).map((a, i) => {
        const selected = win.top + i === sel
        return (
          <Text key={a.id} wrap="truncate" inverse={colors && selected}>
            {selected ? '> ' : '  '}
            <Text color={tone(colors, SEVERITY_COLOR[a.severity])}>{fit(a.severity, 9)}</Text>
            {`  ${fit(a.rule, 16)}  ${fit(a.subject, 14)}  ${fit(a.last_seen.slice(0, 19), 20)}  ${fit(`${a.silenced ? '(silenced) ' : ''}${a.summary}`, summaryWidth).trimEnd()}`}
          </Text>
        )
      })}
      <DialogLine dialog={dialogs.dialog} colors={colors} width={width} />
      <ResultLine state={result} colors={colors} width={width} />
      <Hints width={width} colors={colors} hints={readonly ? ['Tab open/acked/resolved', '↑/↓ move', 'read-only: actions hidden'] : ['Tab open/acked/resolved', '↑/↓ move', 'a ack', 'x silence']} />
    </Box>
  )
}
