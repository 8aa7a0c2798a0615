/**
 * The rollout state machine (issue 7), pure: given a rollout, its nodes and what their heartbeats and
 * update reports show, decide the next step. HQ's driver loads the inputs, calls stepRollout, and
 * writes the decision (node pins, refresh commands, states, the audit entry) in one transaction.
 *
 * A node counts as done when a heartbeat received after its upgrade began shows every service of the
 * rollout running the new digest and healthy (or without a health check), and a later heartbeat, at
 * least min-healthy after the first, still does. A node fails when its update report says the new
 * version failed or was refused, or when health-timeout passes first. A failure halts the rollout;
 * with auto-revert every touched node is pinned back to what it ran before.
 */

export const ROLLOUT_STATES = ['running', 'paused', 'succeeded', 'failed', 'reverting', 'reverted', 'aborted'] as const
export type RolloutState = (typeof ROLLOUT_STATES)[number]
export const OPEN_ROLLOUT_STATES: readonly RolloutState[] = ['running', 'paused', 'reverting']

export const ROLLOUT_NODE_STATES = ['pending', 'upgrading', 'done', 'failed', 'reverting', 'reverted', 'revert_failed', 'skipped', 'halted'] as const
export type RolloutNodeState = (typeof ROLLOUT_NODE_STATES)[number]

/** What one service of a node ran before the rollout (null: it was not resolved, so a revert unpins it). */
export type PreviousVersion = {version: string; digest: string; repository: string} | null

export type RolloutNode = {
  node_id: string
  position: number
  /** The node's services that run the rollout's image. */
  services: readonly {service: string; from: PreviousVersion}[]
  state: RolloutNodeState
  started_at: Date | null
  healthy_since: Date | null
  finished_at: Date | null
  error: string | null
}

export type RolloutParams = {
  digest: string
  max_parallel: number
  min_healthy_ms: number
  health_timeout_ms: number
  auto_revert: boolean
  canary: number
  canary_released: boolean
  state: RolloutState
  reason: string | null
}

/** What HQ knows of a node now: its latest heartbeat and a failure its latest update report shows. */
export type NodeObservation = {
  heartbeat_at: Date | null
  services: readonly {name: string; state: string; health: string; digest: string | null}[]
  /** The update agent's latest report: services it failed to move to, or refused, a digest. */
  update_failures: readonly {at: Date; service: string; digest: string | null; message: string}[]
}

/** One node's change: its new state and timestamps, and which pin to write (target: the rollout's; previous: back). */
export type NodeStep = {
  node_id: string
  from: RolloutNodeState
  to: RolloutNodeState
  started_at?: Date | null
  healthy_since?: Date | null
  finished_at?: Date | null
  error?: string | null
  pin?: 'target' | 'previous'
}

export type RolloutStep = {
  /** The rollout's new state, when it changes. */
  rollout?: {state: RolloutState; reason: string | null}
  nodes: NodeStep[]
}

const TERMINAL: ReadonlySet<RolloutState> = new Set(['succeeded', 'failed', 'reverted', 'aborted'])

export function isOpen(state: RolloutState): boolean {
  return !TERMINAL.has(state)
}

type Digests = (service: string) => {digest: string | null} | 'absent'

/** Whether a heartbeat shows each service as wanted: running that digest and not unhealthy or starting ('absent': no container at all). */
function runsAsWanted(obs: NodeObservation | undefined, services: readonly string[], want: Digests): boolean {
  if (!obs?.heartbeat_at) return false
  return services.every((name) => {
    const w = want(name)
    const s = obs.services.find((x) => x.name === name)
    if (w === 'absent') return !s || s.state === 'missing'
    return s !== undefined && s.digest === w.digest && s.state === 'running' && (s.health === 'healthy' || s.health === 'none')
  })
}

type Judgement = {kind: 'wait'; healthy_since: Date | null} | {kind: 'done'} | {kind: 'failed'; error: string}

/** Judges a node in flight (upgrading or reverting) against the digests it should run. */
function judge(n: RolloutNode, obs: NodeObservation | undefined, want: Digests, p: RolloutParams, now: Date): Judgement {
  const started = n.started_at ?? now
  const names = n.services.map((s) => s.service)
  // A failure counts when reported since this move began, for a service of the rollout, on the way to the digest it should now run.
  const failure = obs?.update_failures.find((f) => {
    const w = names.includes(f.service) ? want(f.service) : 'absent'
    return f.at >= started && w !== 'absent' && f.digest === w.digest
  })
  if (failure) return {kind: 'failed', error: failure.message}
  const fresh = obs?.heartbeat_at && obs.heartbeat_at >= started ? obs : undefined
  if (runsAsWanted(fresh, names, want)) {
    const since = n.healthy_since ?? fresh!.heartbeat_at!
    if (fresh!.heartbeat_at!.getTime() - since.getTime() >= p.min_healthy_ms) return {kind: 'done'}
    if (now.getTime() - started.getTime() >= p.health_timeout_ms) return {kind: 'failed', error: timeoutMessage(p, 'healthy long enough')}
    return {kind: 'wait', healthy_since: since}
  }
  if (now.getTime() - started.getTime() >= p.health_timeout_ms) return {kind: 'failed', error: timeoutMessage(p, fresh ? 'running the new version and healthy' : 'heard from')}
  return {kind: 'wait', healthy_since: null}
}

function timeoutMessage(p: RolloutParams, what: string): string {
  return `not ${what} within ${Math.round(p.health_timeout_ms / 1000)} s`
}

/**
 * The next step of a rollout at `now`. Nodes in flight are judged in every open state (a paused
 * rollout still watches the nodes it started); new nodes start only while running, up to
 * max-parallel at once, in position order; a canary pauses the rollout once that many nodes are done.
 */
export function stepRollout(p: RolloutParams, nodes: readonly RolloutNode[], observations: ReadonlyMap<string, NodeObservation>, now: Date): RolloutStep {
  const out: RolloutStep = {nodes: []}
  if (!isOpen(p.state)) return out
  const state = new Map(nodes.map((n) => [n.node_id, n.state]))
  const set = (n: RolloutNode, step: Omit<NodeStep, 'node_id' | 'from'>) => {
    out.nodes.push({node_id: n.node_id, from: state.get(n.node_id)!, ...step})
    state.set(n.node_id, step.to)
  }

  let failure: {node: string; error: string} | undefined
  for (const n of nodes) {
    if (n.state === 'upgrading') {
      const j = judge(n, observations.get(n.node_id), () => ({digest: p.digest}), p, now)
      if (j.kind === 'done') set(n, {to: 'done', finished_at: now})
      else if (j.kind === 'failed') {
        set(n, {to: 'failed', finished_at: now, error: j.error})
        failure ??= {node: n.node_id, error: j.error}
      } else if (j.healthy_since?.getTime() !== n.healthy_since?.getTime()) set(n, {to: 'upgrading', healthy_since: j.healthy_since})
    } else if (n.state === 'reverting') {
      const from = new Map(n.services.map((s) => [s.service, s.from]))
      const want: Digests = (name) => {
        const f = from.get(name)
        return f ? {digest: f.digest} : 'absent'
      }
      const j = judge(n, observations.get(n.node_id), want, p, now)
      if (j.kind === 'done') set(n, {to: 'reverted', finished_at: now})
      else if (j.kind === 'failed') set(n, {to: 'revert_failed', finished_at: now, error: j.error})
      else if (j.healthy_since?.getTime() !== n.healthy_since?.getTime()) set(n, {to: 'reverting', healthy_since: j.healthy_since})
    }
  }

  if (failure && p.state !== 'reverting') {
    const reason = `${failure.node}: ${failure.error}`
    if (p.auto_revert) {
      for (const n of nodes) {
        const s = state.get(n.node_id)!
        if (s === 'upgrading' || s === 'done' || s === 'failed') set(n, {to: 'reverting', started_at: now, healthy_since: null, finished_at: null, pin: 'previous', ...(s === 'failed' ? {} : {error: null})})
        else if (s === 'pending') set(n, {to: 'skipped'})
      }
      out.rollout = {state: 'reverting', reason: `halted: ${reason}; reverting the touched nodes`}
    } else {
      haltRest(nodes, state, set)
      out.rollout = {state: 'failed', reason: `halted: ${reason}`}
    }
    return out
  }

  const count = (s: RolloutNodeState) => [...state.values()].filter((x) => x === s).length
  if (p.state === 'reverting') {
    if (count('reverting') === 0) {
      const failed = count('revert_failed')
      out.rollout = {state: 'reverted', reason: failed ? `${p.reason ?? 'halted'}; ${failed} node(s) did not revert in time` : p.reason}
    }
    return out
  }

  if (count('pending') === 0 && count('upgrading') === 0) {
    out.rollout = {state: 'succeeded', reason: null}
    return out
  }
  if (p.state !== 'running') return out
  if (p.canary > 0 && !p.canary_released && count('done') >= p.canary) {
    if (count('upgrading') === 0) out.rollout = {state: 'paused', reason: `canary: ${count('done')} node(s) done; resume to continue (jil fleet rollout resume)`}
    return out
  }
  let room = p.max_parallel - count('upgrading')
  // During a canary, start no more nodes than the canary needs.
  if (p.canary > 0 && !p.canary_released) room = Math.min(room, p.canary - count('done') - count('upgrading'))
  for (const n of [...nodes].sort((a, b) => a.position - b.position)) {
    if (room <= 0) break
    if (state.get(n.node_id) !== 'pending') continue
    set(n, {to: 'upgrading', started_at: now, healthy_since: null, pin: 'target'})
    room--
  }
  return out
}

/** A halted or aborted rollout: pending nodes are skipped, nodes in flight halted where they are. */
export function haltRest(nodes: readonly RolloutNode[], state: Map<string, RolloutNodeState>, set: (n: RolloutNode, step: Omit<NodeStep, 'node_id' | 'from'>) => void): void {
  for (const n of nodes) {
    const s = state.get(n.node_id)!
    if (s === 'pending') set(n, {to: 'skipped'})
    else if (s === 'upgrading' || s === 'reverting') set(n, {to: 'halted', finished_at: null})
  }
}

/** The steps of an abort: the rollout ends where it is (nodes keep their pins; jil fleet rollback undoes one). */
export function abortSteps(nodes: readonly RolloutNode[]): NodeStep[] {
  const out: NodeStep[] = []
  const state = new Map(nodes.map((n) => [n.node_id, n.state]))
  haltRest(nodes, state, (n, step) => out.push({node_id: n.node_id, from: n.state, ...step}))
  return out
}
