import {Box, Text} from 'ink'
import {memo, useCallback, useMemo, useRef, useState, useSyncExternalStore} from 'react'

import type {FleetNode} from '../../shared/api.js'
import {clamp, COLUMN_GAP, fit, fitColumns, nodeCells, NodeOrder, parseFilter, SORT_KEYS, windowAt, type CowMap, type NodeColumn, type NodeSort, type SortKey} from '../model.js'
import {Hints, Line, STATUS_COLOR, tone, typed, useKeys, type Frame} from './common.js'

/** The fleet's nodes as the Nodes view reads them: the latest map, and who to tell when it changes (the live feed; a fixed map in tests). */
export type NodesFeed = {get(): CowMap<FleetNode>; subscribe(onChange: () => void): () => void}

/** Nodes that never change. */
export function fixedNodes(nodes: CowMap<FleetNode>): NodesFeed {
  return {get: () => nodes, subscribe: () => () => {}}
}

export type NodesProps = Frame & {
  nodes: NodesFeed
  now: Date
  onOpen: (nodeId: string) => void
  initialFilter?: string
  initialSort?: NodeSort
}

/** What the table shows: the rows on screen, and the counts above them. */
type Screen = {rows: readonly FleetNode[]; top: number; sel: number; total: number; fleet: number}

function sameScreen(a: Screen, b: Screen): boolean {
  return a.top === b.top && a.sel === b.sel && a.total === b.total && a.fleet === b.fleet && a.rows.length === b.rows.length && a.rows.every((n, i) => n === b.rows[i])
}

type RowProps = {node: FleetNode; selected: boolean; columns: readonly NodeColumn[]; now: Date; colors: boolean}

/**
 * One node's row. Memoised on the node copy: rows whose node did not change are neither formatted
 * nor rendered again. Each cell is its own Text, not one Text per row: ink 6 caches the measured
 * size of every distinct text it lays out, for good (its measure-text cache is never emptied), and a
 * whole row (ages, CPU, …) is a new string nearly every second, which would grow that cache without
 * end on a dashboard left open for days. A cell's text comes from a small set of values.
 * Columns are chosen to fit the width, so a row needs no clipping box (ink slices every line it
 * clips, each frame); a terminal narrower than one column truncates the cell instead of wrapping it.
 */
const NodeRow = memo(function NodeRow({node, selected, columns, now, colors}: RowProps) {
  const cells = nodeCells(node, now)
  const inverse = colors && selected
  return (
    <Box height={1}>
      <Text inverse={inverse}>{selected ? '> ' : '  '}</Text>
      {columns.map((c, j) => (
        <Text key={c.key} wrap="truncate" inverse={inverse} {...(c.key === 'status' ? {color: tone(colors, STATUS_COLOR[cells.status as keyof typeof STATUS_COLOR])} : {})}>
          {fit(cells[c.key], c.width, c.align) + (j < columns.length - 1 ? ' '.repeat(COLUMN_GAP) : '')}
        </Text>
      ))}
    </Box>
  )
})

/**
 * The node table: sortable (s: next column, S: reverse), filtered with `/` (substring of the id,
 * zone:CH/FINMA, status:offline, combinable), Enter opens the node. Only the rows on screen are
 * rendered, and columns that do not fit are left out rather than wrapped.
 *
 * It reads the nodes itself, not through its props: the order is kept up to date incrementally
 * (NodeOrder), and a change re-renders the table only when a row on screen (or a count) changed.
 */
export function Nodes({nodes, now, width, height, colors, active, onOpen, initialFilter = '', initialSort = {key: 'id', desc: false}}: NodesProps) {
  const [filter, setFilter] = useState(initialFilter)
  const [editing, setEditing] = useState(false)
  const [sort, setSort] = useState<NodeSort>(initialSort)
  const [cursor, setCursor] = useState(0)
  const top = useRef(0)
  const last = useRef<Screen | null>(null)

  const parsed = useMemo(() => parseFilter(filter), [filter])
  const order = useMemo(() => new NodeOrder(parsed, sort), [parsed, sort])
  const bodyHeight = Math.max(1, height - 3)
  const getScreen = useCallback((): Screen => {
    const fleet = nodes.get()
    order.update(fleet, now)
    const total = order.size
    const sel = clamp(cursor, total)
    // Scrolls as little as it can from the last top (the same answer however often it is asked).
    const win = windowAt(total, sel, bodyHeight, top.current)
    top.current = win.top
    const next: Screen = {rows: order.slice(win.top, win.end), top: win.top, sel, total, fleet: fleet.size}
    if (last.current && sameScreen(last.current, next)) return last.current
    return (last.current = next)
  }, [nodes, order, now, cursor, bodyHeight])
  const screen = useSyncExternalStore(nodes.subscribe, getScreen)
  const {sel, total} = screen
  const columns = useMemo(() => fitColumns(width), [width])

  useKeys((input, key) => {
    if (editing) {
      if (key.escape) {
        setFilter('')
        setEditing(false)
      } else if (key.backspace || key.delete) setFilter((f) => f.slice(0, -1))
      else {
        const t = typed(input, key)
        if (t.text) setFilter((f) => f + t.text)
        if (t.submit) setEditing(false)
      }
      setCursor(0)
      return true
    }
    if (input.startsWith('/') && !key.ctrl && !key.meta) {
      // Reopens the filter as it was. "/zone:CH/FINMA⏎" may come in one read (typed fast, pasted).
      const t = typed(input.slice(1), key)
      if (t.text) setFilter((f) => f + t.text)
      setEditing(!t.submit)
      setCursor(0)
      return true
    }
    if (key.escape && filter) {
      setFilter('')
      setCursor(0)
    } else if (key.downArrow || input === 'j') setCursor(clamp(sel + 1, total))
    else if (key.upArrow || input === 'k') setCursor(clamp(sel - 1, total))
    else if (key.pageDown) setCursor(clamp(sel + bodyHeight, total))
    else if (key.pageUp) setCursor(clamp(sel - bodyHeight, total))
    else if (key.home || input === 'g') setCursor(0)
    else if (key.end || input === 'G') setCursor(Math.max(0, total - 1))
    else if (input === 's') setSort((s) => ({key: SORT_KEYS[(SORT_KEYS.indexOf(s.key) + 1) % SORT_KEYS.length]!, desc: false}))
    else if (input === 'S') setSort((s) => ({...s, desc: !s.desc}))
    else if (key.return && screen.rows[sel - screen.top]) onOpen(screen.rows[sel - screen.top]!.id)
  }, active)

  const arrow = sort.desc ? '↓' : '↑'
  // The sorted column keeps its arrow: a header as wide as its column gives up a letter for it.
  const header = columns.map((c) => fit(c.key === sort.key ? `${c.header.slice(0, c.width - 1)}${arrow}` : c.header, c.width, c.align)).join(' '.repeat(COLUMN_GAP))
  const filterLine = editing || filter ? `/${filter}${editing ? '▏' : ''}` : 'press / to filter (text, zone:CH/FINMA, status:offline)'
  const invalid = parsed.invalid.length ? `  not understood: ${parsed.invalid.join(' ')}` : ''
  const sortName = (k: SortKey) => columns.find((c) => c.key === k)?.header.toLowerCase() ?? k

  return (
    <Box flexDirection="column" width={width}>
      <Line width={width} color={tone(colors, editing ? 'yellow' : 'gray')}>{`${filterLine}  ${total} of ${screen.fleet} nodes  sort: ${sortName(sort.key)} ${arrow}${invalid}`}</Line>
      <Line width={width} bold>{`  ${header}`}</Line>
      {screen.rows.map((n, i) => (
        <NodeRow key={n.id} node={n} selected={screen.top + i === sel} columns={columns} now={now} colors={colors} />
      ))}
      {total === 0 && <Line width={width}>{screen.fleet === 0 ? '  no nodes yet' : '  no node matches the filter'}</Line>}
      <Hints width={width} colors={colors} hints={['↑/↓ move', 'Enter open', '/ filter', 's sort', 'S reverse', 'Esc clear']} />
    </Box>
  )
}
