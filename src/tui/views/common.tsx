import {Text, useInput, type Key} from 'ink'
import {createContext, useCallback, useContext, useEffect, useRef, useState} from 'react'

import type {AlertSeverity} from '../../shared/alerts.js'
import type {NodeStatus} from '../../shared/api.js'
import type {ActionState} from '../hooks/use-action.js'
import {fit} from '../model.js'

/** What every view gets from the app besides its data. */
export type Frame = {
  /** Terminal columns and the rows the view may use. */
  width: number
  height: number
  /** False under NO_COLOR: no colour props at all (ink/chalk do not read NO_COLOR themselves). */
  colors: boolean
  /** False while the app's command line (`:`) holds the keyboard. */
  active?: boolean
}

/** A colour, or none when colours are off. */
export function tone(colors: boolean, color: string): string | undefined {
  return colors ? color : undefined
}

export const STATUS_COLOR: Record<NodeStatus, string> = {
  active: 'green',
  degraded: 'yellow',
  offline: 'red',
  upgrading: 'cyan',
  paused: 'blue',
  stopped: 'gray',
  pending: 'gray',
  revoked: 'magenta',
}

export const SEVERITY_COLOR: Record<AlertSeverity, string> = {critical: 'red', warning: 'yellow'}

/** One line, never wrapped: longer text is cut to the width. */
export function Line({width, children, color, bold}: {width: number; children: string; color?: string | undefined; bold?: boolean}) {
  return (
    <Text wrap="truncate" color={color} bold={bold}>
      {fit(children, width).trimEnd() || ' '}
    </Text>
  )
}

/** The outcome of the last action under a view: running, done, or refused (HQ's code and status). */
export function ResultLine({state, colors, width}: {state: ActionState; colors: boolean; width: number}) {
  if (!state) return null
  if (state.phase === 'running') return <Line width={width} color={tone(colors, 'cyan')}>{`… ${state.label}`}</Line>
  if (state.phase === 'done') return <Line width={width} color={tone(colors, 'green')}>{`✓ ${state.text}`}</Line>
  const status = state.status === 403 ? ' (403 forbidden)' : state.status ? ` (${state.status})` : ''
  return <Line width={width} color={tone(colors, 'red')}>{`✗ ${state.label}: ${state.code}${status}: ${state.text}`}</Line>
}

/** A view's key handler: true when it used the key (a dialog or a filter holds the keyboard), so the app's own keys (q, :, ?, 1–7) stay off. */
export type KeyHandler = (input: string, key: Key) => boolean | void

/** Set by the app: the view registers its handler and the app calls it first, then its own keys unless the view used the key. */
export const KeyRouter = createContext<((handler: KeyHandler | null) => void) | null>(null)

/**
 * Keys from ink, handed to `handler` one at a time, each after React has committed what the one
 * before it changed. Ink emits every key of one terminal read (Down and Enter typed fast, a held
 * arrow) in a row, before React has drawn the state the first one made; a handler would then act on
 * a screen the user no longer sees (Enter opening the row above the cursor). So keys wait in a queue,
 * and every key taken from it also bumps `turn`: the key's own state changes and the bump render
 * together, and the effect of that commit takes the next key with the handler of that render. This
 * holds however React schedules its work (react-reconciler 0.33 renders ink's "legacy" root
 * concurrently, from a scheduler task that a busy machine can push behind a timer).
 */
export function useQueuedInput(handler: (input: string, key: Key) => void, isActive: boolean): void {
  const ref = useRef(handler)
  ref.current = handler
  const queue = useRef<[string, Key][]>([])
  const [turn, setTurn] = useState(0)
  useEffect(() => {
    const next = queue.current.shift()
    if (!next) return
    ref.current(next[0], next[1])
    if (queue.current.length > 0) setTurn((t) => t + 1)
  }, [turn])
  useEffect(() => () => void (queue.current = []), [])
  useInput(
    useCallback((input: string, key: Key) => {
      queue.current.push([input, key])
      if (queue.current.length === 1) setTurn((t) => t + 1)
    }, []),
    {isActive},
  )
}

/**
 * A view's keys. Inside the app they go through its KeyRouter (the app's one input queue, the
 * view's handler first); alone (tests) through useQueuedInput.
 */
export function useKeys(handler: KeyHandler, active: boolean | undefined = true): void {
  const ref = useRef(handler)
  ref.current = handler
  const register = useContext(KeyRouter)
  const stable = useCallback((input: string, key: Key) => ref.current(input, key), [])
  useEffect(() => {
    if (!register) return
    register(active !== false ? stable : null)
    return () => register(null)
  }, [register, active, stable])
  useQueuedInput(stable, register === null && active !== false)
}

/**
 * Typed text as ink hands it over: several characters at once when pasted or typed fast (a
 * terminal's read returns what arrived), possibly ending in Enter. `text` is what to insert (control
 * characters dropped), `submit` whether an Enter came with it.
 */
export function typed(input: string, key: Key): {text: string; submit: boolean} {
  if (key.return) return {text: '', submit: true}
  if (key.ctrl || key.meta || !input) return {text: '', submit: false}
  const end = input.search(/[\r\n]/)
  const text = (end < 0 ? input : input.slice(0, end)).replace(/[\u0000-\u001f\u007f]/g, '')
  return {text, submit: end >= 0}
}

/** A question the view asks before it acts, or a value it asks for. */
export type Dialog =
  | {kind: 'confirm'; question: string; onYes: () => void}
  | {kind: 'text'; label: string; value: string; onSubmit: (value: string) => void}
  | {kind: 'choice'; label: string; options: readonly string[]; index: number; onPick: (index: number) => void}

/**
 * A view's dialog: open one, route keys to it (y/N, typing, ←/→ and Enter, Esc cancels). `handle`
 * answers true while one is open: it holds the keyboard, so q, 1–7 and : type into it.
 */
export function useDialog(): {dialog: Dialog | null; open: (d: Dialog) => void; close: () => void; handle: (input: string, key: Key) => boolean} {
  const [dialog, setDialog] = useState<Dialog | null>(null)
  const close = () => setDialog(null)
  const handle = (input: string, key: Key): boolean => {
    const d = dialog
    if (!d) return false
    if (key.escape) {
      setDialog(null)
      return true
    }
    if (d.kind === 'confirm') {
      setDialog(null)
      if (input === 'y' || input === 'Y') d.onYes()
      return true
    }
    if (d.kind === 'text') {
      if (key.backspace || key.delete) {
        setDialog({...d, value: d.value.slice(0, -1)})
        return true
      }
      const t = typed(input, key)
      const value = d.value + t.text
      if (t.submit) {
        setDialog(null)
        if (value.trim() !== '') d.onSubmit(value.trim())
      } else if (t.text) setDialog({...d, value})
      return true
    }
    if (key.leftArrow || key.upArrow) setDialog({...d, index: (d.index + d.options.length - 1) % d.options.length})
    else if (key.rightArrow || key.downArrow || key.tab) setDialog({...d, index: (d.index + 1) % d.options.length})
    else if (key.return) {
      setDialog(null)
      d.onPick(d.index)
    }
    return true
  }
  return {dialog, open: setDialog, close, handle}
}

export function DialogLine({dialog, colors, width}: {dialog: Dialog | null; colors: boolean; width: number}) {
  if (!dialog) return null
  const c = tone(colors, 'yellow')
  if (dialog.kind === 'confirm') return <Line width={width} color={c} bold>{`${dialog.question} [y/N]`}</Line>
  if (dialog.kind === 'text') return <Line width={width} color={c} bold>{`${dialog.label}: ${dialog.value}▏ (Enter to go on, Esc to cancel)`}</Line>
  const opts = dialog.options.map((o, i) => (i === dialog.index ? `[${o}]` : ` ${o} `)).join(' ')
  return <Line width={width} color={c} bold>{`${dialog.label}: ${opts}  (←/→, Enter, Esc)`}</Line>
}

/** Key hints at the bottom of a view; read-only sessions show none for actions. */
export function Hints({hints, colors, width}: {hints: string[]; colors: boolean; width: number}) {
  return <Line width={width} color={tone(colors, 'gray')}>{hints.join('  ')}</Line>
}
