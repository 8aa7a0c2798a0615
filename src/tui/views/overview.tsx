import {Box, Text} from 'ink'

import type {NodeStatus} from '../../shared/api.js'
import {fit, progressBar, shortAge, type Overview as OverviewData} from '../model.js'
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

/**
 * The fleet at a glance: nodes by status, the 13 zones, versions per service, sync lag, open alerts
 * by severity and the rollouts in progress. Narrow terminals lose the less telling zone columns.
 */
export function Overview({data, width, height, colors}: OverviewProps) {
  const zoneCols = SHOWN.filter((s) => width >= 100 || ['active', 'degraded', 'offline', 'paused'].includes(s.status))
  const zoneHeader = `  ${fit('ZONE', 10)} ${fit('NODES', 5, 'right')}  ${zoneCols.map((s) => fit(s.label.toUpperCase(), 9, 'right')).join(' ')}`
  const budget = Math.max(0, height - 8 - data.zones.length)
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
        {`  ${data.alerts.acked} acked    sync lag: ${data.syncLag.nodes === 0 ? 'all nodes caught up' : `${data.syncLag.nodes} node(s) behind${data.syncLag.maxLagS === null ? '' : `, worst ${shortAge(Math.round(data.syncLag.maxLagS))}`}`}`}
      </Text>
      <Line width={width} bold>{zoneHeader}</Line>
      {data.zones.map((z) => (
        <Text key={z.zone} wrap="truncate">
          {`  ${fit(z.zone, 10)} ${fit(String(z.total), 5, 'right')}  `}
          {zoneCols.map((s) => {
            const v = z.byStatus[s.status]
            return (
              <Text key={s.status} color={v > 0 && s.status !== 'active' ? tone(colors, STATUS_COLOR[s.status]) : undefined}>
                {`${fit(v === 0 ? '·' : String(v), 9, 'right')} `}
              </Text>
            )
          })}
        </Text>
      ))}
      <Line width={width} bold>{'versions per service'}</Line>
      {data.versions.length === 0 && <Line width={width}>{'  no heartbeats yet'}</Line>}
      {versionLines.map((v) => (
        <Line key={v.service} width={width}>{`  ${fit(v.service, 18)} ${v.versions.map((x) => `${x.version} ×${x.nodes}`).join('   ')}`}</Line>
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
