import {useEffect, useState} from 'react'

import {messageOf} from '../../shared/errors.js'
import type {FleetSource, NodeDetailView} from '../source.js'

export type NodeDetailState = {detail: NodeDetailView | null; loading: boolean; error: string | null}

/**
 * One node's detail (GET /v1/fleet/nodes/:id and its track's stack), loaded when the node is opened
 * and again when `changeKey` changes: the node's row from the stream (heartbeat time, status, run
 * mode), so the detail follows the node without polling. An answer to an older request is dropped.
 */
export function useNodeDetail(source: FleetSource, nodeId: string | null, changeKey: string): NodeDetailState {
  const [state, setState] = useState<NodeDetailState>({detail: null, loading: nodeId !== null, error: null})
  useEffect(() => {
    if (nodeId === null) return
    let current = true
    setState((s) => ({detail: s.detail?.node.id === nodeId ? s.detail : null, loading: true, error: null}))
    source.nodeDetail(nodeId).then(
      (detail) => current && setState({detail, loading: false, error: null}),
      (err: unknown) => current && setState((s) => ({detail: s.detail, loading: false, error: messageOf(err)})),
    )
    return () => {
      current = false
    }
  }, [source, nodeId, changeKey])
  return state
}
