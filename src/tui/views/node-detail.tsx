import {Box, Text} from 'ink'

import type {AlertView} from '../../shared/alerts.js'
import type {FleetNode} from '../../shared/api.js'
import type {ActionState} from '../hooks/use-action.js'
import {agentRows, certDaysLeft, fit, heartbeatAgeS, memPercent, serviceRows, shortAge, statusAt, syncSummary, upgradeCandidates, type ImageListRow, type ServiceRow} from '../model.js'
import type {NodeDetailView} from '../source.js'
import {DialogLine, Hints, Line, ResultLine, STATUS_COLOR, tone, useDialog, useKeys, type Frame} from './common.js'

/** What a user can do to a node from its detail view. */
export type NodeAction = {kind: 'start' | 'stop' | 'pause' | 'resume' | 'rollback'} | {kind: 'upgrade'; image: string} | {kind: 'revoke'; reason: string}

export type NodeDetailProps = Frame & {
  nodeId: string
  /** The node's row from the live stream (undefined: not, or no longer, known). */
  node: FleetNode | undefined
  detail: NodeDetailView | null
  loading: boolean
  error: string | null
  images: readonly ImageListRow[]
  alerts: Iterable<AlertView>
  now: Date
  readonly: boolean
  result: ActionState
  onAction: (action: NodeAction) => void
  onBack: () => void
}

const RUN_MODE_KEYS: Record<string, 'start' | 'stop' | 'pause' | 'resume'> = {s: 'start', t: 'stop', p: 'pause', r: 'resume'}

const WHAT: Record<'start' | 'stop' | 'pause' | 'resume' | 'rollback', string> = {
  start: 'Start {id}: run its services again?',
  stop: 'Stop {id}: fail /healthz, drain, then stop its services?',
  pause: 'Pause {id}: fail /healthz so traffic drains (services keep running)?',
  resume: 'Resume {id}: pass /healthz again?',
  rollback: "Roll {id} back to its previous signed versions (signed with your key)?",
}

const SIGNATURE_COLOR: Record<ServiceRow['signature'], string> = {signed: 'green', unsigned: 'red', deprecated: 'red', none: 'gray', unknown: 'gray'}
const HEALTH_COLOR: Record<string, string> = {healthy: 'green', ok: 'green', '-': 'gray', '?': 'gray', starting: 'cyan', paused: 'blue', stopped: 'gray'}

function pct(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : `${Math.round(v)}%`
}

/**
 * One node: status, resources, certificate, event sync, services (container state, health, version,
 * digest, signature), desired vs applied, its agents' last results; actions each behind a confirmation, with the result
 * line below. Read-only sessions see no actions.
 */
export function NodeDetail(p: NodeDetailProps) {
  const {nodeId, node, detail, width, colors, now, readonly, active} = p
  const dialogs = useDialog()
  const d = detail?.node.id === nodeId ? detail.node : null
  const n: FleetNode | null = node ?? d

  useKeys((input, key) => {
    if (dialogs.handle(input, key)) return true
    if (key.escape || key.backspace || key.leftArrow) return p.onBack()
    if (readonly || !n) return
    const id = n.id
    const runMode = RUN_MODE_KEYS[input]
    if (runMode) {
      dialogs.open({kind: 'confirm', question: WHAT[runMode].replace('{id}', id), onYes: () => p.onAction({kind: runMode})})
    } else if (input === 'b') {
      dialogs.open({kind: 'confirm', question: WHAT.rollback.replace('{id}', id), onYes: () => p.onAction({kind: 'rollback'})})
    } else if (input === 'u') {
      const candidates = upgradeCandidates(p.images, n.track).slice(0, 8)
      if (candidates.length === 0) return
      const labels = candidates.map((c) => `${c.image} ${c.version}`)
      dialogs.open({
        kind: 'choice',
        label: `Upgrade ${id} to`,
        options: labels,
        index: 0,
        onPick: (i) => {
          const c = candidates[i]!
          dialogs.open({kind: 'confirm', question: `Upgrade ${id} to ${c.image} ${c.version} (${c.digest.slice(0, 19)})?`, onYes: () => p.onAction({kind: 'upgrade', image: `${c.image}@${c.digest}`})})
        },
      })
    } else if (input === 'X') {
      dialogs.open({
        kind: 'text',
        label: `Revoke ${id} (permanent); reason`,
        value: '',
        onSubmit: (reason) => dialogs.open({kind: 'confirm', question: `Revoke ${id} for good ("${reason}")? It can never rejoin`, onYes: () => p.onAction({kind: 'revoke', reason})}),
      })
    }
  }, active)

  if (!n) {
    return (
      <Box flexDirection="column" width={width}>
        <Line width={width}>{p.loading ? `loading ${nodeId}…` : p.error ? `${nodeId}: ${p.error}` : `${nodeId}: no such node`}</Line>
        <Hints width={width} colors={colors} hints={['Esc back']} />
      </Box>
    )
  }

  const status = statusAt(n, now)
  const days = certDaysLeft(n, now)
  const services = serviceRows(n, d, detail?.stack ?? null, p.images, p.alerts, now)
  const agents = d ? agentRows(d) : []
  // The heartbeat's counts; from an older HQ, those the health agent's report carries.
  const health = d?.reports.health
  const containers = d?.containers ?? (health && typeof health.details.containers === 'object' && health.details.containers !== null ? (health.details.containers as Record<string, number>) : null)
  const s = d?.state
  const sync = n.sync ?? null
  const cw = {service: 14, state: 9, health: 9, version: 9, digest: 19}

  return (
    <Box flexDirection="column" width={width}>
      <Text wrap="truncate">
        <Text bold>{n.id}</Text>
        {`  ${n.zone}  ${n.track}  operator ${n.operator}  `}
        <Text color={tone(colors, STATUS_COLOR[status])}>{status}</Text>
        {`  run mode ${n.run_mode}  ${n.last_heartbeat_at === null ? 'no heartbeat yet' : `heartbeat ${shortAge(heartbeatAgeS(n, now))} ago`}`}
      </Text>
      <Line width={width} color={days !== null && days < 10 ? tone(colors, days < 7 ? 'red' : 'yellow') : undefined}>
        {`certificate until ${n.cert_not_after ?? '-'}${days === null ? '' : days < 0 ? ' (expired)' : ` (${days}d left)`}   CPU ${pct(n.system?.cpu_percent)}  MEM ${pct(memPercent(n))}  DISK ${pct(n.system?.disk_percent)}${d?.agent_version ? `   agent ${d.agent_version}` : ''}`}
      </Line>
      <Line width={width}>
        {s
          ? `desired vs applied: run mode ${s.desired.run_mode}/${s.applied?.run_mode ?? '-'}, sequence ${s.desired.sequence ?? '-'}/${s.applied?.sequence ?? '-'}, config v${s.desired.config_version}/${s.applied ? `v${s.applied.config_version}` : '-'}  ${s.in_sync === null ? '(no heartbeat yet)' : s.in_sync ? 'in sync' : 'NOT in sync'}`
          : p.loading
            ? 'loading detail…'
            : p.error
              ? `detail: ${p.error}`
              : ''}
      </Line>
      {sync && (
        <Line width={width} color={sync.caught_up ? undefined : tone(colors, 'yellow')}>
          {`event sync: ${syncSummary(sync)}`}
        </Line>
      )}
      <Line width={width} bold>{`  ${fit('SERVICE', cw.service)}  ${fit('STATE', cw.state)}  ${fit('HEALTH', cw.health)}  ${fit('VERSION', cw.version)}  ${fit('DIGEST', cw.digest)}  SIGNATURE`}</Line>
      {services.length === 0 && <Line width={width}>{'  no services reported yet'}</Line>}
      {services.map((r) => (
        <Text key={r.service} wrap="truncate">
          {`  ${fit(`${r.service}${r.critical ? '*' : ''}`, cw.service)}  `}
          <Text color={tone(colors, r.state === null ? 'gray' : r.state === 'running' ? 'green' : r.critical ? 'red' : 'yellow')}>{fit(r.state ?? '-', cw.state)}</Text>
          {'  '}
          <Text color={tone(colors, HEALTH_COLOR[r.health] ?? 'yellow')}>{fit(r.health, cw.health)}</Text>
          {`  ${fit(r.version ?? '-', cw.version)}  ${fit(r.digest ? r.digest.slice(0, 19) : '-', cw.digest)}  `}
          <Text color={tone(colors, SIGNATURE_COLOR[r.signature])}>{r.signature}</Text>
        </Text>
      ))}
      {services.some((r) => r.critical) && <Line width={width} color={tone(colors, 'gray')}>{'  * critical: down or unhealthy makes the node degraded'}</Line>}
      {containers && (
        <Line width={width}>{`containers: ${containers.total ?? 0} total, ${containers.running ?? 0} running, ${containers.healthy ?? 0} healthy, ${containers.unhealthy ?? 0} unhealthy, ${containers.exited ?? 0} exited`}</Line>
      )}
      {agents.length > 0 && <Line width={width} bold>{'  AGENT        RESULT  FINISHED              FINDINGS  SUMMARY'}</Line>}
      {agents.map((r) => (
        <Text key={r.agent} wrap="truncate">
          {`  ${fit(r.agent, 11)}  `}
          <Text color={tone(colors, r.ok ? 'green' : 'red')}>{fit(r.ok ? 'ok' : 'FAILED', 6)}</Text>
          {`  ${fit(r.at.slice(0, 19), 20)}  `}
          <Text color={r.critical > 0 ? tone(colors, 'red') : r.warning > 0 ? tone(colors, 'yellow') : undefined}>{fit(r.critical + r.warning === 0 ? '-' : `${r.critical}c ${r.warning}w`, 8)}</Text>
          {`  ${r.summary}`}
        </Text>
      ))}
      {d && (d.config.desired.length > 0 || d.config.desired_version > 0) && (
        <Line width={width}>{`config: desired v${d.config.desired_version}, applied ${d.config.applied_version === null ? '-' : `v${d.config.applied_version}`}${d.config.desired.length ? `: ${d.config.desired.map((c) => `${c.name} v${c.version}`).join(', ')}` : ''}`}</Line>
      )}
      <DialogLine dialog={dialogs.dialog} colors={colors} width={width} />
      <ResultLine state={p.result} colors={colors} width={width} />
      <Hints
        width={width}
        colors={colors}
        hints={readonly ? ['read-only: actions hidden', 'Esc back'] : ['s start', 't stop', 'p pause', 'r resume', 'u upgrade', 'b rollback', 'X revoke', 'Esc back']}
      />
    </Box>
  )
}
