import {Box, Text} from 'ink'

import type {NodeStatus} from '../../shared/api.js'
import {fit, lagText, progressBar, type Overview as OverviewData} from '../model.js'
import {Line, SEVERITY_COLOR, STATUS_COLOR, tone, type Frame} from './common.js'

export type OverviewProps = Frame & {data: OverviewData}

/** The statuses the Overview counts, in the seed's words (active = healthy). */
const SHOWN: {status: NodeStatus; label: string}[] = [
  {status: 'active', label: 'healthy'},
  {status: 'degraded', label: 'degraded'},
  {status: 'offline', label: 'offline'},
  {status: 'paused', label: 'paused'},
  {status: 'revoked', label: 'revoked'},
  {status: 'upgrading', label: 'upgrading'},
  {status: 'stopped', label: 'stopped'},
  {status: 'pending', label: 'pending'},
]

/** `median 0.4s, max 95s (SG-MAS-01), 3 of 120 nodes behind`, from the nodes' heartbeats. */
function syncText(s: OverviewData['syncLag']): string {
  if (s.reporting === 0) return 'no node up reports it'
  const lag = `median ${lagText(s.medianLagS!)}, max ${lagText(s.maxLagS!)}${s.worstNode ? ` (${s.worstNode})` : ''}`
  return `${lag}, ${s.behind === 0 ? `all ${s.reporting} caught up` : `${s.behind} of ${s.reporting} nodes behind`}`
}

/**
 * Lines drawn every second are plain ASCII ('.' for none, 'x' for times): ink measures each line's
 * width every frame, and one character outside ASCII sends the whole line down a path ten times slower.
 */

/**
 * The fleet at a glance: nodes by status, the 13 zones, versions per service, sync lag, open alerts
 * by severity and the rollouts in progress. Narrow terminals lose the less telling zone columns.
 */
export function Overview({data, width, height, colors}: OverviewProps) {
  const sync = data.syncLag
  const zoneCols = SHOWN.filter((s) => width >= 100 || ['active', 'degraded', 'offline', 'paused'].includes(s.status))
  const zoneHeader = `  ${fit('ZONE', 10)} ${fit('NODES', 5, 'right')}  ${zoneCols.map((s) => fit(s.label.toUpperCase(), 9, 'right')).join(' ')}`
  const budget = Math.max(0, height - 9 - data.zones.length)
  const versionLines = data.versions.slice(0, Math.max(1, Math.floor(budget / 2)))
  const rollouts = data.rollouts.slice(0, Math.max(1, budget - versionLines.length))
  const barWidth = Math.max(10, Math.min(30, width - 70))
  return (
    <Box flexDirection="column" width={width}>
      <Text wrap="truncate">
        <Text bold>{`${data.total} nodes `}</Text>
        {SHOWN.map((s) => (
          <Text key={s.status} color={tone(colors, STATUS_COLOR[s.status])}>{`  ${s.label} ${data.byStatus[s.status]}`}</Text>
        ))}
      </Text>
      <Text wrap="truncate">
        {'alerts: '}
        <Text color={tone(colors, SEVERITY_COLOR.critical)}>{`${data.alerts.open.critical} critical`}</Text>
        {'  '}
        <Text color={tone(colors, SEVERITY_COLOR.warning)}>{`${data.alerts.open.warning} warning`}</Text>
        {`  ${data.alerts.acked} acked`}
      </Text>
      <Text wrap="truncate">
        {'event sync: '}
        <Text color={sync.behind > 0 ? tone(colors, 'yellow') : undefined}>{syncText(sync)}</Text>
        {sync.alerts > 0 ? `  (${sync.alerts} sync-lag alert${sync.alerts === 1 ? '' : 's'})` : ''}
      </Text>
      <Line width={width} bold>{zoneHeader}</Line>
      {data.zones.map((z) => (
        <Text key={z.zone} wrap="truncate">
          {`  ${fit(z.zone, 10)} ${fit(String(z.total), 5, 'right')}  `}
          {zoneCols.map((s) => {
            const v = z.byStatus[s.status]
            return (
              <Text key={s.status} color={v > 0 && s.status !== 'active' ? tone(colors, STATUS_COLOR[s.status]) : undefined}>
                {`${fit(v === 0 ? '.' : String(v), 9, 'right')} `}
              </Text>
            )
          })}
        </Text>
      ))}
      <Line width={width} bold>{'versions per service'}</Line>
      {data.versions.length === 0 && <Line width={width}>{'  no heartbeats yet'}</Line>}
      {versionLines.map((v) => (
        <Line key={v.service} width={width}>{`  ${fit(v.service, 18)} ${v.versions.map((x) => `${x.version} x${x.nodes}`).join('   ')}`}</Line>
      ))}
      <Line width={width} bold>{`rollouts in progress: ${data.rollouts.length}`}</Line>
      {rollouts.map((r) => (
        <Text key={r.id} wrap="truncate">
          {`  ${fit(r.image, 18)} ${fit(r.version, 8)} → ${fit(r.target, 12)} `}
          <Text color={tone(colors, r.failed > 0 ? 'red' : r.state === 'paused' ? 'yellow' : 'cyan')}>{progressBar(r.done, r.total, barWidth)}</Text>
          {` ${r.done}/${r.total} ${r.state}${r.failed ? `, ${r.failed} failed` : ''}`}
        </Text>
      ))}
    </Box>
  )
}
