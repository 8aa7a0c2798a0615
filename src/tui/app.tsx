import {Box, Text, useApp, useStdout, type Key} from 'ink'
import {useCallback, useEffect, useMemo, useRef, useState} from 'react'

import type {AlertView, SilenceRequest} from '../shared/alerts.js'
import type {CommandTarget, FleetNode, NodeCommandName} from '../shared/api.js'
import {systemClock, type Clock} from '../shared/clock.js'
import {useAction} from './hooks/use-action.js'
import {shallowEqual, useFeedSelector, useFeedStore, type Feed, type FeedOptions} from './hooks/use-fleet.js'
import {useNodeDetail} from './hooks/use-node-detail.js'
import {useNow} from './hooks/use-now.js'
import {alertsIn, overview, OverviewTally, security, ZONES, type FleetState, type ImageListRow} from './model.js'
import type {BroadcastSent, FleetSource} from './source.js'
import {Alerts} from './views/alerts.js'
import {Broadcast} from './views/broadcast.js'
import {KeyRouter, Line, tone, typed, useQueuedInput, type KeyHandler} from './views/common.js'
import {Help} from './views/help.js'
import {Images} from './views/images.js'
import {NodeDetail, type NodeAction} from './views/node-detail.js'
import {Nodes, type NodesFeed} from './views/nodes.js'
import {Overview} from './views/overview.js'
import {Security} from './views/security.js'

/** The views, in the order of their number keys (1–7). The node detail is reached from Nodes. */
export const VIEWS = ['overview', 'nodes', 'images', 'alerts', 'security', 'broadcast', 'help'] as const
export type ViewName = (typeof VIEWS)[number]

const TITLES: Record<ViewName, string> = {overview: 'Overview', nodes: 'Nodes', images: 'Images', alerts: 'Alerts', security: 'Security', broadcast: 'Broadcast', help: 'Help'}

export type AppProps = {
  source: FleetSource
  /** Hide every action that changes something (the k9s habit). */
  readonly?: boolean
  /** False under NO_COLOR. */
  colors?: boolean
  clock?: Clock
  feed?: FeedOptions
  /** The terminal's size; default: the output stream's, following resizes. */
  size?: {columns: number; rows: number}
  initialView?: ViewName
}

/** The part of the live feed the app draws itself (the Nodes view reads the nodes on its own). */
type AppFeed = {
  phase: Feed['phase']
  since: Date | null
  error: string | null
  nodeCount: number
  alerts: FleetState['alerts']
  rollouts: FleetState['rollouts']
  commands: FleetState['commands']
  images: FleetState['images']
  /** The open node's row, in the node detail view. */
  openRow: FleetNode | undefined
}

/** `:no` → nodes: a view's name or a unique prefix of it (k9s style); `q`/`quit` quits. */
export function parseCommand(cmd: string): ViewName | 'quit' | null {
  const c = cmd.trim().toLowerCase()
  if (c === 'q' || c === 'quit' || c === 'q!') return 'quit'
  if (c === '') return null
  const hits = VIEWS.filter((v) => v.startsWith(c))
  return hits.length === 1 ? hits[0]! : null
}

function useTerminalSize(fixed: AppProps['size']): {columns: number; rows: number} {
  const {stdout} = useStdout()
  const read = () => fixed ?? {columns: stdout.columns || 100, rows: stdout.rows || 24}
  const [size, setSize] = useState(read)
  useEffect(() => {
    if (fixed) return
    const onResize = () => setSize(read())
    stdout.on('resize', onResize)
    return () => {
      stdout.off('resize', onResize)
    }
  }, [stdout, fixed])
  return fixed ?? size
}

function Header({feed, source, readonly, colors}: {feed: Pick<Feed, 'phase' | 'since' | 'error'>; source: FleetSource; readonly: boolean; colors: boolean}) {
  const {hqUrl, user, role} = source.info
  // The marker comes before the rest: on a narrow terminal the line is cut from the right, and why
  // the stream dropped (the error) is the first thing to go.
  const marker =
    feed.phase === 'live' ? (
      <Text color={tone(colors, 'green')}>● live</Text>
    ) : feed.phase === 'connecting' ? (
      <Text color={tone(colors, 'yellow')}>◌ connecting…</Text>
    ) : (
      <Text color={tone(colors, 'red')} bold>
        {`✗ STALE since ${feed.since ? feed.since.toISOString().slice(11, 19) : '?'}Z, reconnecting`}
      </Text>
    )
  return (
    <Text wrap="truncate">
      <Text bold>jil top</Text>
      {'  '}
      {marker}
      {`  ${hqUrl}  ${user} (${role})${readonly ? '  [read-only]' : ''}${feed.phase !== 'live' && feed.error ? `  ${feed.error}` : ''}`}
    </Text>
  )
}

function NavBar({view, colors}: {view: ViewName | 'node'; colors: boolean}) {
  const current = view === 'node' ? 'nodes' : view
  return (
    <Text wrap="truncate">
      {VIEWS.map((v, i) => (
        <Text key={v} bold={v === current} color={v === current ? tone(colors, 'cyan') : undefined}>
          {v === current ? `[${i + 1} ${TITLES[v]}] ` : ` ${i + 1} ${TITLES[v]}  `}
        </Text>
      ))}
    </Text>
  )
}

/**
 * `jil top`: the views and the keys between them (1–7, `:name`, `?`, `q`), the header (HQ, user,
 * role, live/stale) and the wiring of the views' callbacks to the source's actions. Views get data
 * and callbacks only; the hooks own the stream, the clock and the actions.
 */
export function App({source, readonly = false, colors = true, clock = systemClock, feed: feedOptions, size, initialView = 'overview'}: AppProps) {
  const {exit} = useApp()
  const store = useFeedStore(source, feedOptions)
  const now = useNow(clock)
  const {columns: width, rows} = useTerminalSize(size)
  const [view, setView] = useState<ViewName | 'node'>(initialView)
  const [openNode, setOpenNode] = useState<string | null>(null)
  const [cmd, setCmd] = useState<string | null>(null)
  const [cmdError, setCmdError] = useState<string | null>(null)
  const [sent, setSent] = useState<BroadcastSent | null>(null)
  const action = useAction()
  // The view's key handler, called before the app's own keys (see KeyRouter).
  const viewKeys = useRef<KeyHandler | null>(null)
  const registerKeys = useCallback((h: KeyHandler | null) => {
    viewKeys.current = h
  }, [])

  // What the app itself draws from the feed. A heartbeat changes none of it (the Nodes view reads
  // the nodes itself), so the stream re-renders the app only when the header, the node count,
  // alerts, rollouts, commands, images or the open node change.
  const feed = useFeedSelector(
    store,
    (f): AppFeed => ({
      phase: f.phase,
      since: f.since,
      error: f.error,
      nodeCount: f.fleet.nodes.size,
      alerts: f.fleet.alerts,
      rollouts: f.fleet.rollouts,
      commands: f.fleet.commands,
      images: f.fleet.images,
      openRow: view === 'node' && openNode !== null ? f.fleet.nodes.get(openNode) : undefined,
    }),
    shallowEqual,
  )
  const nodesFeed = useMemo<NodesFeed>(() => ({get: () => store.get().fleet.nodes, subscribe: store.subscribe}), [store])

  const nowS = Math.floor(now.getTime() / 1000)
  // Aggregates over every node follow heartbeats once a second (and any change of the node count,
  // alerts or rollouts at once), not on each of the ten frames a second a busy fleet brings.
  // The Overview's counts are kept up to date across frames, counting only the nodes that changed:
  // while it is shown, with each update of the stream (a few nodes each, no render), so that the
  // frame drawn each second has next to nothing left to count.
  const tally = useMemo(() => new OverviewTally(), [store])
  const lastNow = useRef(now)
  lastNow.current = now
  useEffect(() => {
    if (view !== 'overview') return
    return store.subscribe(() => void tally.update(store.get().fleet.nodes, lastNow.current))
  }, [view, store, tally])
  const overviewData = useMemo(() => (view === 'overview' ? overview(store.get().fleet, now, tally) : null), [view, nowS, feed.nodeCount, feed.alerts, feed.rollouts])
  const securityData = useMemo(() => (view === 'security' ? security(store.get().fleet, now) : null), [view, nowS, feed.nodeCount, feed.alerts])
  const alertTabs = useMemo(() => ({open: alertsIn(feed, 'open'), acked: alertsIn(feed, 'acked'), resolved: alertsIn(feed, 'resolved')}), [feed.alerts])
  const zones = useMemo(() => [...new Set<string>([...ZONES, ...store.get().fleet.nodes.list().map((n) => n.zone)])], [feed.nodeCount])

  const openRow = feed.openRow
  const detail = useNodeDetail(source, view === 'node' ? openNode : null, openRow ? `${openRow.last_heartbeat_at}|${openRow.status}|${openRow.run_mode}` : '')

  const go = (v: ViewName) => {
    setView(v)
    setCmdError(null)
  }

  const onKey = (input: string, key: Key) => {
    const runCmd = (c: string) => {
      const target = parseCommand(c)
      setCmd(null)
      if (target === 'quit') exit()
      else if (target) go(target)
      else setCmdError(`no view ${JSON.stringify(c)}: try ${VIEWS.map((v) => `:${v}`).join(' ')}`)
    }
    if (cmd !== null) {
      if (key.escape) setCmd(null)
      else if (key.backspace || key.delete) setCmd(cmd.slice(0, -1))
      else {
        const t = typed(input, key)
        if (t.submit) runCmd(cmd + t.text)
        else if (t.text) setCmd(cmd + t.text)
      }
      return
    }
    if (viewKeys.current?.(input, key)) return
    if (input === 'q') exit()
    else if (input.startsWith(':') && !key.ctrl && !key.meta) {
      // ":nodes⏎" may come in one read (typed fast, pasted).
      const t = typed(input.slice(1), key)
      setCmdError(null)
      if (t.submit) runCmd(t.text)
      else setCmd(t.text)
    } else if (input === '?') go('help')
    else if (/^[1-7]$/.test(input)) go(VIEWS[Number(input) - 1]!)
  }
  useQueuedInput(onKey, true)

  const run = (label: string, fn: () => Promise<string>) => {
    if (!readonly) void action.run(label, fn)
  }
  const onNodeAction = (a: NodeAction) => {
    const id = openNode!
    if (a.kind === 'upgrade') run(`upgrade ${id}`, () => source.upgrade(id, a.image))
    else if (a.kind === 'rollback') run(`rollback ${id}`, () => source.rollback(id))
    else if (a.kind === 'revoke') run(`revoke ${id}`, () => source.revoke(id, a.reason))
    else {
      const mode = a.kind
      run(`${mode} ${id}`, () => source.runMode(id, mode))
    }
  }
  const onApprove = (i: ImageListRow, track: 'testnet' | 'mainnet') => run(`approve ${i.image} ${i.version}`, () => source.approve(i, track))
  const onPromote = (i: ImageListRow, to: 'testnet' | 'mainnet') => run(`promote ${i.image} ${i.version}`, () => source.promote(i, to))
  const onAck = (a: AlertView) => run(`ack ${a.id}`, () => source.ack(a.id))
  const onSilence = (req: SilenceRequest) => run(`silence ${req.rule}`, () => source.silence(req))
  const onSend = (command: NodeCommandName, target: CommandTarget) =>
    run(`broadcast ${command}`, async () => {
      const s = await source.broadcast(command, target)
      setSent(s)
      return `${command} sent to ${s.rows.length} node(s) (${s.target}); answers follow`
    })

  const frame = {width, height: Math.max(3, rows - 4), colors, active: cmd === null}
  let body
  switch (view) {
    case 'overview':
      body = <Overview {...frame} data={overviewData!} />
      break
    case 'nodes':
      body = (
        <Nodes
          {...frame}
          nodes={nodesFeed}
          now={now}
          onOpen={(id) => {
            setOpenNode(id)
            setView('node')
          }}
        />
      )
      break
    case 'node':
      body = (
        <NodeDetail
          {...frame}
          nodeId={openNode!}
          node={openRow}
          detail={detail.detail}
          loading={detail.loading}
          error={detail.error}
          images={feed.images}
          alerts={feed.alerts.values()}
          now={now}
          readonly={readonly}
          result={action.state}
          onAction={onNodeAction}
          onBack={() => go('nodes')}
        />
      )
      break
    case 'images':
      body = <Images {...frame} images={feed.images} readonly={readonly} result={action.state} onApprove={onApprove} onPromote={onPromote} />
      break
    case 'alerts':
      body = <Alerts {...frame} alerts={alertTabs} readonly={readonly} result={action.state} onAck={onAck} onSilence={onSilence} />
      break
    case 'security':
      body = <Security {...frame} data={securityData!} />
      break
    case 'broadcast':
      body = <Broadcast {...frame} zones={zones} sent={sent} commands={feed.commands} readonly={readonly} result={action.state} onSend={onSend} />
      break
    case 'help':
      body = <Help {...frame} readonly={readonly} />
      break
  }

  return (
    <KeyRouter.Provider value={registerKeys}>
      <Box flexDirection="column" width={width}>
        <Header feed={feed} source={source} readonly={readonly} colors={colors} />
        <NavBar view={view} colors={colors} />
        {body}
        {cmd !== null ? (
          <Line width={width} color={tone(colors, 'yellow')}>{`:${cmd}▏`}</Line>
        ) : cmdError ? (
          <Line width={width} color={tone(colors, 'red')}>{cmdError}</Line>
        ) : (
          <Line width={width} color={tone(colors, 'gray')}>{'? help  : command  1-7 views  q quit'}</Line>
        )}
      </Box>
    </KeyRouter.Provider>
  )
}
