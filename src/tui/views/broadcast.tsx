import {Box, Text} from 'ink'
import {useMemo, useState} from 'react'

import {BROADCAST_COMMANDS} from '../../cli/broadcast.js'
import type {CommandTarget, FleetCommand, NodeCommandName} from '../../shared/api.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'
import type {ActionState} from '../hooks/use-action.js'
import {broadcastResults, fit} from '../model.js'
import type {BroadcastSent} from '../source.js'
import {DialogLine, Hints, Line, ResultLine, tone, useDialog, useKeys, type Frame} from './common.js'

const TARGETS = ['all', 'zone', 'node'] as const

export type BroadcastProps = Frame & {
  zones: readonly string[]
  /** The last broadcast sent from here, and the commands as HQ streams them (their live status). */
  sent: BroadcastSent | null
  commands: ReadonlyMap<string, FleetCommand>
  readonly: boolean
  result: ActionState
  onSend: (command: NodeCommandName, target: CommandTarget) => void
}

const STATUS_COLOR: Record<string, string> = {succeeded: 'green', failed: 'red', expired: 'red', refused: 'red', pending: 'gray', delivered: 'cyan'}

/**
 * Sends refresh, cycle, pause, resume or reboot to every node, a zone or one node, then shows each
 * node's answer as it arrives on the stream.
 */
export function Broadcast({zones, sent, commands, width, height, colors, active, readonly, result, onSend}: BroadcastProps) {
  const [command, setCommand] = useState(0)
  const [target, setTarget] = useState(0)
  const [zone, setZone] = useState(0)
  const [node, setNode] = useState('')
  const dialogs = useDialog()
  const rows = useMemo(() => (sent ? broadcastResults(sent.rows, commands) : []), [sent, commands])

  const send = (nodeId: string) => {
    const cmd = BROADCAST_COMMANDS[command]!
    const kind = TARGETS[target]!
    const t: CommandTarget = kind === 'all' ? {all: true} : kind === 'zone' ? {zone: zones[zone]!} : {node: nodeId}
    const where = kind === 'all' ? 'every node' : kind === 'zone' ? `every node of ${zones[zone]}` : nodeId
    dialogs.open({kind: 'confirm', question: `Send ${cmd} to ${where}?`, onYes: () => onSend(cmd, t)})
  }

  useKeys((input, key) => {
    if (dialogs.handle(input, key)) return true
    if (readonly) return
    if (key.leftArrow) setCommand((c) => (c + BROADCAST_COMMANDS.length - 1) % BROADCAST_COMMANDS.length)
    else if (key.rightArrow) setCommand((c) => (c + 1) % BROADCAST_COMMANDS.length)
    else if (key.tab) setTarget((t) => (t + 1) % TARGETS.length)
    else if (TARGETS[target] === 'zone' && key.upArrow) setZone((z) => (z + zones.length - 1) % zones.length)
    else if (TARGETS[target] === 'zone' && key.downArrow) setZone((z) => (z + 1) % zones.length)
    else if (TARGETS[target] === 'node' && (input === 'n' || (key.return && !node))) {
      dialogs.open({
        kind: 'text',
        label: 'Node id',
        value: node,
        onSubmit: (v) => {
          const id = v.toUpperCase()
          if (NODE_ID_PATTERN.test(id)) setNode(id)
        },
      })
    } else if (key.return) send(node)
  }, active)

  const kind = TARGETS[target]!
  const where = kind === 'all' ? 'every active node' : kind === 'zone' ? `zone ${zones[zone]} (↑/↓)` : `node ${node || '(press n to type its id)'}`
  const done = rows.filter((r) => r.status === 'succeeded').length
  const failed = rows.filter((r) => ['failed', 'expired', 'refused'].includes(r.status)).length
  const list = rows.slice(0, Math.max(1, height - 8))
  return (
    <Box flexDirection="column" width={width}>
      {readonly ? (
        <Line width={width}>{'read-only: broadcasting is hidden'}</Line>
      ) : (
        <>
          <Text wrap="truncate">
            {'command: '}
            {BROADCAST_COMMANDS.map((c, i) => (
              <Text key={c} bold={i === command} color={i === command ? tone(colors, 'cyan') : undefined}>
                {i === command ? `[${c}] ` : ` ${c}  `}
              </Text>
            ))}
            {'  (←/→)'}
          </Text>
          <Line width={width}>{`target:  ${TARGETS.map((t, i) => (i === target ? `[${t}]` : ` ${t} `)).join(' ')}  (Tab)   → ${where}`}</Line>
        </>
      )}
      <DialogLine dialog={dialogs.dialog} colors={colors} width={width} />
      <ResultLine state={result} colors={colors} width={width} />
      {sent && <Line width={width} bold>{`${sent.command} → ${sent.target}: ${done}/${rows.length} succeeded${failed ? `, ${failed} failed` : ''}`}</Line>}
      {sent && <Line width={width} bold>{`  ${fit('NODE', 14)}  ${fit('STATUS', 10)}  RESULT`}</Line>}
      {list.map((r) => (
        <Text key={`${r.node_id}:${r.command_id ?? ''}`} wrap="truncate">
          {`  ${fit(r.node_id, 14)}  `}
          <Text color={tone(colors, STATUS_COLOR[r.status] ?? 'gray')}>{fit(r.status, 10)}</Text>
          {`  ${r.summary}`}
        </Text>
      ))}
      <Hints width={width} colors={colors} hints={readonly ? [] : ['←/→ command', 'Tab target', 'Enter send']} />
    </Box>
  )
}
