import {Box, Text} from 'ink'
import {useMemo, useRef, useState} from 'react'

import type {FleetNode} from '../../shared/api.js'
import {clamp, COLUMN_GAP, fit, fitColumns, nodeCells, parseFilter, SORT_KEYS, visibleNodes, windowAt, type CowMap, type NodeSort, type SortKey} from '../model.js'
import {Hints, Line, STATUS_COLOR, tone, typed, useKeys, type Frame} from './common.js'

export type NodesProps = Frame & {
  nodes: CowMap<FleetNode>
  now: Date
  onOpen: (nodeId: string) => void
  initialFilter?: string
  initialSort?: NodeSort
}

/**
 * The node table: sortable (s: next column, S: reverse), filtered with `/` (substring of the id,
 * zone:CH/FINMA, status:offline, combinable), Enter opens the node. Only the rows on screen are
 * rendered, and columns that do not fit are left out rather than wrapped.
 */
export function Nodes({nodes, now, width, height, colors, active, onOpen, initialFilter = '', initialSort = {key: 'id', desc: false}}: NodesProps) {
  const [filter, setFilter] = useState(initialFilter)
  const [editing, setEditing] = useState(false)
  const [sort, setSort] = useState<NodeSort>(initialSort)
  const [cursor, setCursor] = useState(0)
  const top = useRef(0)

  const parsed = useMemo(() => parseFilter(filter), [filter])
  // The order (filter, then sort) is worked out when the filter, the sort, the second or the number
  // of nodes changes, not on every heartbeat: 10,000 nodes at 100 heartbeats/s would otherwise be
  // re-sorted for every frame. Between, the rows keep their places and show each node's latest copy.
  const nowS = Math.floor(now.getTime() / 1000)
  const latest = useRef(nodes)
  latest.current = nodes
  const order = useMemo(() => visibleNodes(latest.current.list(), parsed, sort, now).map((n) => n.id), [parsed, sort, nowS, nodes.size])
  const rows = order
  const bodyHeight = Math.max(1, height - 3)
  const sel = clamp(cursor, rows.length)
  const win = windowAt(rows.length, sel, bodyHeight, top.current)
  top.current = win.top
  const columns = fitColumns(width)

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
    } else if (key.downArrow || input === 'j') setCursor(clamp(sel + 1, rows.length))
    else if (key.upArrow || input === 'k') setCursor(clamp(sel - 1, rows.length))
    else if (key.pageDown) setCursor(clamp(sel + bodyHeight, rows.length))
    else if (key.pageUp) setCursor(clamp(sel - bodyHeight, rows.length))
    else if (key.home || input === 'g') setCursor(0)
    else if (key.end || input === 'G') setCursor(Math.max(0, rows.length - 1))
    else if (input === 's') setSort((s) => ({key: SORT_KEYS[(SORT_KEYS.indexOf(s.key) + 1) % SORT_KEYS.length]!, desc: false}))
    else if (input === 'S') setSort((s) => ({...s, desc: !s.desc}))
    else if (key.return && rows[sel]) onOpen(rows[sel]!)
  }, active)

  const arrow = sort.desc ? '↓' : '↑'
  // The sorted column keeps its arrow: a header as wide as its column gives up a letter for it.
  const header = columns.map((c) => fit(c.key === sort.key ? `${c.header.slice(0, c.width - 1)}${arrow}` : c.header, c.width, c.align)).join(' '.repeat(COLUMN_GAP))
  const filterLine = editing || filter ? `/${filter}${editing ? '▏' : ''}` : 'press / to filter (text, zone:CH/FINMA, status:offline)'
  const invalid = parsed.invalid.length ? `  not understood: ${parsed.invalid.join(' ')}` : ''
  const sortName = (k: SortKey) => columns.find((c) => c.key === k)?.header.toLowerCase() ?? k

  return (
    <Box flexDirection="column" width={width}>
      <Line width={width} color={tone(colors, editing ? 'yellow' : 'gray')}>{`${filterLine}  ${rows.length} of ${nodes.size} nodes  sort: ${sortName(sort.key)} ${arrow}${invalid}`}</Line>
      <Line width={width} bold>{`  ${header}`}</Line>
      {rows.slice(win.top, win.end).map((id, i) => {
        const n = nodes.get(id)
        if (!n) return null
        const cells = nodeCells(n, now)
        const selected = win.top + i === sel
        return (
          <Text key={n.id} wrap="truncate" inverse={colors && selected}>
            {selected ? '> ' : '  '}
            {columns.map((c, j) => {
              const text = fit(cells[c.key], c.width, c.align) + (j < columns.length - 1 ? ' '.repeat(COLUMN_GAP) : '')
              return c.key === 'status' ? (
                <Text key={c.key} color={tone(colors, STATUS_COLOR[cells.status as keyof typeof STATUS_COLOR])}>
                  {text}
                </Text>
              ) : (
                text
              )
            })}
          </Text>
        )
      })}
      {rows.length === 0 && <Line width={width}>{nodes.size === 0 ? '  no nodes yet' : '  no node matches the filter'}</Line>}
      <Hints width={width} colors={colors} hints={['↑/↓ move', 'Enter open', '/ filter', 's sort', 'S reverse', 'Esc clear']} />
    </Box>
  )
}
