import {useCallback, useEffect, useRef, useState} from 'react'

import {describeError} from '../source.js'

/** The last action and how it went: the result line under a view. */
export type ActionState =
  | null
  | {phase: 'running'; label: string}
  | {phase: 'done'; label: string; text: string}
  | {phase: 'failed'; label: string; code: string; status: number | null; text: string}

/**
 * Runs a user's action (an HQ call answering with a one-line result) and keeps its outcome for the
 * result line. A refusal by HQ (a 403 for a role without the permission) is an outcome like any other.
 */
export function useAction(): {state: ActionState; run: (label: string, fn: () => Promise<string>) => Promise<void>} {
  const [state, setState] = useState<ActionState>(null)
  const mounted = useRef(true)
  useEffect(
    () => () => {
      mounted.current = false
    },
    [],
  )
  const run = useCallback(async (label: string, fn: () => Promise<string>) => {
    setState({phase: 'running', label})
    try {
      const text = await fn()
      if (mounted.current) setState({phase: 'done', label, text})
    } catch (err) {
      const e = describeError(err)
      if (mounted.current) setState({phase: 'failed', label, code: e.code, status: e.status, text: e.message})
    }
  }, [])
  return {state, run}
}
