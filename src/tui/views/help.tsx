import {Box} from 'ink'

import {Line, type Frame} from './common.js'

export type HelpProps = Frame & {readonly: boolean}

const GLOBAL = [
  ['1–7', 'overview, nodes, images, alerts, security, broadcast, help'],
  [':name', 'switch by name (:nodes, :alerts, …; a prefix is enough), :q quits'],
  ['?', 'this help'],
  ['q, Ctrl-C', 'quit'],
  ['Esc', 'back, cancel, clear the filter'],
]

const VIEWS = [
  ['Nodes', '↑/↓ PgUp/PgDn move, Enter open, / filter (text, zone:CH/FINMA, status:offline), s sort column, S reverse'],
  ['Node', 's start, t stop, p pause, r resume, u upgrade, b rollback, X revoke (each asks first)'],
  ['Images', 'a approve for the next track, p promote to it'],
  ['Alerts', 'Tab open/acked/resolved, a ack, x silence'],
  ['Broadcast', '←/→ command, Tab all/zone/node, ↑/↓ zone, n node id, Enter send'],
]

/** The keys. A read-only session says that its actions are hidden. */
export function Help({width, readonly}: HelpProps) {
  return (
    <Box flexDirection="column" width={width}>
      <Line width={width} bold>{'keys'}</Line>
      {GLOBAL.map(([k, v]) => (
        <Line key={k} width={width}>{`  ${k!.padEnd(12)} ${v}`}</Line>
      ))}
      <Line width={width} bold>{readonly ? 'views (read-only: every action is hidden)' : 'views'}</Line>
      {VIEWS.filter(([name]) => !readonly || name === 'Nodes').map(([k, v]) => (
        <Line key={k} width={width}>{`  ${k!.padEnd(12)} ${v}`}</Line>
      ))}
      <Line width={width}>{'the header shows HQ, you and your role, and whether the stream is live or stale (reconnecting)'}</Line>
    </Box>
  )
}
