import {describe, expect, it} from 'vitest'

import {abortSteps, stepRollout, type NodeObservation, type RolloutNode, type RolloutParams} from '../../src/hq/fleet/rollout-engine.js'

const NEW = `sha256:${'b'.repeat(64)}`
const OLD = `sha256:${'a'.repeat(64)}`
const T0 = new Date('2026-11-28T10:00:00Z')
const at = (s: number) => new Date(T0.getTime() + s * 1000)

function params(o: Partial<RolloutParams> = {}): RolloutParams {
  return {digest: NEW, max_parallel: 1, min_healthy_ms: 30_000, health_timeout_ms: 300_000, auto_revert: false, canary: 0, canary_released: false, state: 'running', reason: null, ...o}
}

function node(id: string, position: number, o: Partial<RolloutNode> = {}): RolloutNode {
  return {node_id: id, position, services: [{service: 'api', from: {version: 'v1.0', digest: OLD, repository: 'r/api'}}], state: 'pending', started_at: null, healthy_since: null, finished_at: null, error: null, ...o}
}

function seen(s: number, digest: string, o: {health?: string; state?: string; failures?: NodeObservation['update_failures']} = {}): NodeObservation {
  return {heartbeat_at: at(s), services: [{name: 'api', state: o.state ?? 'running', health: o.health ?? 'healthy', digest}], update_failures: o.failures ?? []}
}

/** Applies a step's node changes, as the driver writes them. */
function apply(nodes: RolloutNode[], step: ReturnType<typeof stepRollout>): RolloutNode[] {
  return nodes.map((n) => {
    let out = n
    for (const s of step.nodes.filter((x) => x.node_id === n.node_id)) {
      out = {
        ...out,
        state: s.to,
        ...(s.started_at !== undefined ? {started_at: s.started_at} : {}),
        ...(s.healthy_since !== undefined ? {healthy_since: s.healthy_since} : {}),
        ...(s.finished_at !== undefined ? {finished_at: s.finished_at} : {}),
        ...(s.error !== undefined ? {error: s.error} : {}),
      }
    }
    return out
  })
}

describe('the rollout state machine', () => {
  it('starts nodes in position order, at most max-parallel at once, and pins each to the target', () => {
    const nodes = [node('N-3', 3), node('N-1', 1), node('N-2', 2)]
    const s = stepRollout(params({max_parallel: 2}), nodes, new Map(), T0)
    expect(s.nodes).toEqual([
      {node_id: 'N-1', from: 'pending', to: 'upgrading', started_at: T0, healthy_since: null, pin: 'target'},
      {node_id: 'N-2', from: 'pending', to: 'upgrading', started_at: T0, healthy_since: null, pin: 'target'},
    ])
    expect(s.rollout).toBeUndefined()
  })

  it('a node is done only when a heartbeat after its start shows the new digest healthy, and a later one min-healthy on still does', () => {
    let nodes = apply([node('N-1', 1), node('N-2', 2)], stepRollout(params(), [node('N-1', 1), node('N-2', 2)], new Map(), T0))
    // A heartbeat from before the upgrade began proves nothing, even with the right digest.
    let s = stepRollout(params(), nodes, new Map([['N-1', seen(-1, NEW)]]), at(5))
    expect(s.nodes).toEqual([])
    // The old digest still runs: wait.
    s = stepRollout(params(), nodes, new Map([['N-1', seen(4, OLD)]]), at(5))
    expect(s.nodes).toEqual([])
    // Starting health is not healthy.
    s = stepRollout(params(), nodes, new Map([['N-1', seen(6, NEW, {health: 'starting'})]]), at(7))
    expect(s.nodes).toEqual([])
    s = stepRollout(params(), nodes, new Map([['N-1', seen(10, NEW)]]), at(11))
    expect(s.nodes).toEqual([{node_id: 'N-1', from: 'upgrading', to: 'upgrading', healthy_since: at(10)}])
    nodes = apply(nodes, s)
    // The same heartbeat later: not yet min-healthy apart, however late it is now.
    s = stepRollout(params(), nodes, new Map([['N-1', seen(10, NEW)]]), at(100))
    expect(s.nodes).toEqual([])
    // Unhealthy in between resets the clock.
    s = stepRollout(params(), nodes, new Map([['N-1', seen(25, NEW, {health: 'unhealthy'})]]), at(26))
    expect(s.nodes).toEqual([{node_id: 'N-1', from: 'upgrading', to: 'upgrading', healthy_since: null}])
    // Healthy 30 s after the first healthy heartbeat: done, and the next node starts in the same step.
    s = stepRollout(params(), nodes, new Map([['N-1', seen(40, NEW)]]), at(41))
    expect(s.nodes).toEqual([
      {node_id: 'N-1', from: 'upgrading', to: 'done', finished_at: at(41)},
      {node_id: 'N-2', from: 'pending', to: 'upgrading', started_at: at(41), healthy_since: null, pin: 'target'},
    ])
    nodes = apply(nodes, s)
    nodes = apply(nodes, stepRollout(params({min_healthy_ms: 0}), nodes, new Map([['N-2', seen(42, NEW, {health: 'none'})]]), at(42)))
    expect(nodes.map((n) => n.state)).toEqual(['done', 'done'])
    expect(stepRollout(params(), nodes, new Map(), at(43)).rollout).toEqual({state: 'succeeded', reason: null})
  })

  it('a node that times out halts the rollout: the rest are skipped, nothing is reverted without auto-revert', () => {
    const nodes = [node('N-1', 1, {state: 'done'}), node('N-2', 2, {state: 'upgrading', started_at: T0}), node('N-3', 3)]
    expect(stepRollout(params(), nodes, new Map([['N-2', seen(200, OLD)]]), at(299)).nodes).toEqual([])
    const s = stepRollout(params(), nodes, new Map([['N-2', seen(200, OLD)]]), at(300))
    expect(s.rollout).toEqual({state: 'failed', reason: 'halted: N-2: not running the new version and healthy within 300 s'})
    expect(s.nodes).toEqual([
      {node_id: 'N-2', from: 'upgrading', to: 'failed', finished_at: at(300), error: 'not running the new version and healthy within 300 s'},
      {node_id: 'N-3', from: 'pending', to: 'skipped'},
    ])
    expect(s.nodes.some((x) => x.pin === 'previous')).toBe(false)
  })

  it('a failed update on the node halts at once; auto-revert pins every touched node back', () => {
    const nodes = [node('N-1', 1, {state: 'done', finished_at: at(50)}), node('N-2', 2, {state: 'upgrading', started_at: at(60)}), node('N-3', 3)]
    // A failure reported before this node's upgrade began is an older story.
    const old = {at: at(30), service: 'api', digest: NEW, message: 'api failed on the node: HEALTH_TIMEOUT'}
    expect(stepRollout(params({auto_revert: true}), nodes, new Map([['N-2', seen(61, OLD, {failures: [old]})]]), at(62)).nodes).toEqual([])
    const failure = {at: at(70), service: 'api', digest: NEW, message: 'api failed on the node: HEALTH_TIMEOUT'}
    const s = stepRollout(params({auto_revert: true}), nodes, new Map([['N-2', seen(71, OLD, {failures: [failure]})]]), at(72))
    expect(s.rollout).toEqual({state: 'reverting', reason: 'halted: N-2: api failed on the node: HEALTH_TIMEOUT; reverting the touched nodes'})
    const after = apply(nodes, s)
    expect(after.map((n) => n.state)).toEqual(['reverting', 'reverting', 'skipped'])
    expect(s.nodes.filter((x) => x.pin === 'previous').map((x) => x.node_id)).toEqual(['N-1', 'N-2'])
    // The failed node's moves chain (upgrading → failed → reverting), so the audit entry tells them right.
    expect(s.nodes.filter((x) => x.node_id === 'N-2').map((x) => [x.from, x.to])).toEqual([
      ['upgrading', 'failed'],
      ['failed', 'reverting'],
    ])
    // The failed node keeps its error while it reverts.
    expect(after[1]!.error).toBe('api failed on the node: HEALTH_TIMEOUT')

    // Reverted when the old digest runs healthy again, min-healthy apart; the rollout ends reverted.
    const p = params({auto_revert: true, state: 'reverting', reason: s.rollout!.reason, min_healthy_ms: 0})
    const s2 = stepRollout(p, after, new Map([['N-1', seen(80, OLD)], ['N-2', seen(80, OLD)]]), at(81))
    expect(s2.nodes.map((x) => [x.node_id, x.to])).toEqual([
      ['N-1', 'reverted'],
      ['N-2', 'reverted'],
    ])
    expect(s2.rollout).toEqual({state: 'reverted', reason: s.rollout!.reason})
  })

  it('a revert that does not converge in time ends as revert_failed and says so', () => {
    const nodes = [node('N-1', 1, {state: 'reverting', started_at: T0})]
    const p = params({auto_revert: true, state: 'reverting', reason: 'halted: X'})
    const s = stepRollout(p, nodes, new Map([['N-1', seen(299, NEW)]]), at(300))
    expect(s.nodes[0]).toMatchObject({to: 'revert_failed'})
    expect(s.rollout).toEqual({state: 'reverted', reason: 'halted: X; 1 node(s) did not revert in time'})
  })

  it('a canary pauses the rollout once that many nodes are done, and only then', () => {
    let nodes = [node('N-1', 1), node('N-2', 2), node('N-3', 3)]
    const p = params({canary: 1, max_parallel: 3, min_healthy_ms: 0})
    let s = stepRollout(p, nodes, new Map(), T0)
    // With max-parallel 3, a canary of 1 still starts one node.
    expect(s.nodes.map((x) => x.node_id)).toEqual(['N-1'])
    nodes = apply(nodes, s)
    s = stepRollout(p, nodes, new Map([['N-1', seen(5, NEW)]]), at(5))
    expect(s.nodes.map((x) => [x.node_id, x.to])).toEqual([['N-1', 'done']])
    expect(s.rollout).toEqual({state: 'paused', reason: 'canary: 1 node(s) done; resume to continue (jil fleet rollout resume)'})
    nodes = apply(nodes, s)
    // Paused: nothing starts.
    expect(stepRollout({...p, state: 'paused'}, nodes, new Map(), at(6))).toEqual({nodes: []})
    // Resumed past the canary: the rest start together.
    s = stepRollout({...p, canary_released: true}, nodes, new Map(), at(7))
    expect(s.nodes.map((x) => [x.node_id, x.to])).toEqual([
      ['N-2', 'upgrading'],
      ['N-3', 'upgrading'],
    ])
  })

  it('a paused rollout still watches the nodes in flight; terminal rollouts do nothing', () => {
    const nodes = [node('N-1', 1, {state: 'upgrading', started_at: T0, healthy_since: at(1)}), node('N-2', 2)]
    const s = stepRollout(params({state: 'paused', min_healthy_ms: 0}), nodes, new Map([['N-1', seen(2, NEW)]]), at(3))
    expect(s.nodes).toEqual([{node_id: 'N-1', from: 'upgrading', to: 'done', finished_at: at(3)}])
    for (const state of ['succeeded', 'failed', 'reverted', 'aborted'] as const) expect(stepRollout(params({state}), nodes, new Map(), at(3))).toEqual({nodes: []})
  })

  it('a service that was unresolved before reverts to absent', () => {
    const n = node('N-1', 1, {state: 'reverting', started_at: T0, services: [{service: 'api', from: null}]})
    const p = params({state: 'reverting', auto_revert: true, min_healthy_ms: 0})
    expect(stepRollout(p, [n], new Map([['N-1', seen(1, NEW)]]), at(2)).nodes).toEqual([])
    const gone: NodeObservation = {heartbeat_at: at(3), services: [], update_failures: []}
    expect(stepRollout(p, [n], new Map([['N-1', gone]]), at(4)).nodes[0]).toMatchObject({to: 'reverted'})
  })

  it('abort skips the pending nodes and halts those in flight', () => {
    const steps = abortSteps([node('N-1', 1, {state: 'done'}), node('N-2', 2, {state: 'upgrading'}), node('N-3', 3)])
    expect(steps).toEqual([
      {node_id: 'N-2', from: 'upgrading', to: 'halted', finished_at: null},
      {node_id: 'N-3', from: 'pending', to: 'skipped'},
    ])
  })
})
