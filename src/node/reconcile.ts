import {setTimeout as sleep} from 'node:timers/promises'

import {JilError, messageOf} from '../shared/errors.js'
import type {DesiredService, DesiredState} from '../shared/stack.js'
import {serviceSpecHash} from '../shared/stack.js'
import type {AgentContext} from './agents/types.js'
import {containerName, type ContainerState, type ManagedContainer, type Runtime} from './runtime.js'
import {manifestsFor, verifyImage, type NodeTrust} from './trust.js'

/**
 * Reconcile (DESIGN.md §5): bring a node's containers to its verified desired state. A pure planner
 * decides what to do from the document and the node's containers; the executor does it one service
 * at a time (rolling), health-gated, restoring the old container when a replacement fails.
 */

/** What an action acts on: enough to act and to report, without the whole container. */
export type ContainerRef = {id: string; name: string; digest: string | null; version: string | null; state: ContainerState}

export type Action =
  /** The service has no container: create and start it. */
  | {kind: 'create'; service: string}
  /** The container was made from another digest or spec: replace it (rolling, health-gated). */
  | {kind: 'replace'; service: string; container: ContainerRef}
  /** The service's container is a leftover of an interrupted replace: give it its canonical name back. */
  | {kind: 'restore'; service: string; container: ContainerRef}
  | {kind: 'start'; service: string; container: ContainerRef}
  | {kind: 'stop'; service: string; container: ContainerRef}
  | {kind: 'remove'; service: string; container: ContainerRef; reason: 'unlisted' | 'duplicate' | 'leftover'}

export type ActionKind = Action['kind']

export type ServiceOutcome = {
  service: string
  action: ActionKind
  from: {version: string | null; digest: string | null} | null
  /** What the service runs after the action when it succeeds (null for a removal). */
  to: {version: string | null; digest: string | null} | null
  outcome: 'ok' | 'failed' | 'refused'
  error?: {code: string; message: string}
}

/** `<canonical>-old-<short id>`: the name a replaced container carries until the new one is healthy. */
export function oldName(canonical: string, id: string): string {
  return `${canonical}-old-${id.slice(0, 12)}`
}

function isLeftover(c: Pick<ManagedContainer, 'name'>, canonical: string): boolean {
  return c.name.startsWith(`${canonical}-old-`)
}

/**
 * Is this the old container of a replace (in flight, or left by an interrupted one)? The update owns
 * it: it is stopped on purpose, and restarting it would race the replacement.
 */
export function isReplaceLeftover(nodeId: string, c: Pick<ManagedContainer, 'name' | 'service'>): boolean {
  return isLeftover(c, containerName(nodeId, c.service))
}

function ref(c: ManagedContainer): ContainerRef {
  return {id: c.id, name: c.name, digest: c.digest, version: c.version, state: c.state}
}

const byName = (a: ManagedContainer, b: ManagedContainer) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
const LIVE: ReadonlySet<ContainerState> = new Set(['running', 'restarting', 'paused'])

/**
 * The container that stands for a service: the one with the canonical name; else (an interrupted
 * replace, or a container named by hand) a running one, then any, by name. The others are spares.
 */
function currentOf(cs: ManagedContainer[], canonical: string): ManagedContainer | undefined {
  return cs.find((c) => c.name === canonical) ?? cs.find((c) => c.state === 'running') ?? cs[0]
}

/** The version each listed service runs now (from its current container's labels): rollbacks are judged against it. */
export function runningVersions(nodeId: string, containers: readonly ManagedContainer[]): Map<string, string> {
  const out = new Map<string, string>()
  const mine = containers.filter((c) => c.nodeId === nodeId && c.service).sort(byName)
  for (const service of new Set(mine.map((c) => c.service))) {
    const c = currentOf(
      mine.filter((x) => x.service === service),
      containerName(nodeId, service),
    )
    if (c?.version) out.set(service, c.version)
  }
  return out
}

/**
 * What to do to bring `containers` to `desired`. Pure and deterministic: services in the document's
 * order, removals last (sorted by name), so a service renamed aside during its replace never races
 * a removal. Containers of another node are ignored, whatever the caller passes.
 *
 * - running: create what is missing; replace what was made from another digest or spec; start an
 *   exited one whose spec is unchanged; remove what is not listed, duplicates, and `-old-` leftovers
 *   of an interrupted replace once the canonical container runs (until then a leftover is the
 *   fallback, and when it is all there is it gets the canonical name back);
 * - stopped: stop every listed container (never remove it); unlisted ones are removed all the same;
 * - paused: nothing (the services keep running; the node fails /healthz instead).
 *
 * Services HQ could not resolve (`unresolved`) are left alone: they are still in the stack.
 */
export function planReconcile(desired: DesiredState, containers: readonly ManagedContainer[]): Action[] {
  if (desired.run_mode === 'paused') return []
  const nodeId = desired.node_id
  const mine = containers.filter((c) => c.nodeId === nodeId).sort(byName)
  const listed = new Set(desired.services.map((s) => s.name))
  const keep = new Set([...listed, ...(desired.unresolved ?? [])])
  const actions: Action[] = []
  const removals: Extract<Action, {kind: 'remove'}>[] = []

  for (const s of desired.services) {
    const canonical = containerName(nodeId, s.name)
    const cs = mine.filter((c) => c.service === s.name)
    const current = currentOf(cs, canonical)
    const spares = cs.filter((c) => c !== current)

    if (desired.run_mode === 'stopped') {
      for (const c of [...(current ? [current] : []), ...spares]) if (LIVE.has(c.state)) actions.push({kind: 'stop', service: s.name, container: ref(c)})
      for (const c of spares) {
        if (current?.name === canonical && isLeftover(c, canonical)) removals.push({kind: 'remove', service: s.name, container: ref(c), reason: 'leftover'})
        else if (!isLeftover(c, canonical)) removals.push({kind: 'remove', service: s.name, container: ref(c), reason: 'duplicate'})
      }
      continue
    }

    if (!current) {
      actions.push({kind: 'create', service: s.name})
      continue
    }
    // An unhealthy canonical container (a replace interrupted mid health wait) does not count: the leftover stays the way back.
    const canonicalRuns = current.name === canonical && current.state === 'running' && current.health !== 'unhealthy'
    if (current.specHash !== serviceSpecHash(s)) {
      // Replace renames the current container aside itself, so a leftover is replaced as it is.
      actions.push({kind: 'replace', service: s.name, container: ref(current)})
    } else {
      if (current.name !== canonical) actions.push({kind: 'restore', service: s.name, container: ref(current)})
      if (current.state === 'exited' || current.state === 'created') actions.push({kind: 'start', service: s.name, container: ref(current)})
    }
    for (const c of spares) {
      if (!isLeftover(c, canonical)) removals.push({kind: 'remove', service: s.name, container: ref(c), reason: 'duplicate'})
      // A leftover is the way back until the canonical container runs.
      else if (canonicalRuns) removals.push({kind: 'remove', service: s.name, container: ref(c), reason: 'leftover'})
    }
  }

  for (const c of mine) {
    if (!keep.has(c.service)) removals.push({kind: 'remove', service: c.service, container: ref(c), reason: 'unlisted'})
  }
  removals.sort((a, b) => (a.container.name < b.container.name ? -1 : a.container.name > b.container.name ? 1 : 0))
  return [...actions, ...removals]
}

// ---------------------------------------------------------------------------------------------
// Executor

export type ApplyOptions = {
  /** How often the health wait looks at the container (default 250 ms). */
  pollMs?: number
}

function errorOf(err: unknown): {code: string; message: string} {
  return err instanceof JilError ? {code: err.code, message: err.message} : {code: 'INTERNAL', message: messageOf(err)}
}

/**
 * Waits until a freshly started container counts as started: its health check says healthy (an
 * unhealthy one fails), or, without a health check, it still runs after the grace period. A container
 * that exits fails at once. Bounded by the update timeout and by the daemon stopping (ctx.signal).
 * The wait is in real time: the engine runs health checks in real time whatever the node's clock says.
 */
export async function waitStarted(ctx: AgentContext, rt: Runtime, id: string, s: DesiredService, pollMs: number): Promise<void> {
  const graceMs = s.grace_s !== undefined ? s.grace_s * 1000 : ctx.settings.updateGraceMs
  const timeoutMs = Math.max(ctx.settings.updateHealthTimeoutMs, graceMs + 2 * pollMs)
  const t0 = performance.now()
  for (;;) {
    if (ctx.signal.aborted) throw new JilError('UPDATE_ABORTED', `the node is stopping: ${s.name} was not confirmed healthy`, {hint: 'the next update run tries again'})
    const c = await rt.inspect(id)
    const elapsed = performance.now() - t0
    if (c.state === 'exited' || c.state === 'dead') {
      throw new JilError('CONTAINER_EXITED', `${s.name} ${s.version} exited${c.exitCode !== null ? ` with code ${c.exitCode}` : ''} while starting`, {hint: 'see the container log of the failed version'})
    }
    if (c.health === 'unhealthy') throw new JilError('UNHEALTHY', `${s.name} ${s.version} failed its health check`, {hint: 'see the health check output (docker inspect) of the failed version'})
    if (c.health === 'healthy') return
    // No health check (the spec's or the image's): running through the grace period counts.
    if (c.health === 'none' && c.state === 'running' && elapsed >= graceMs) return
    if (elapsed >= timeoutMs) {
      throw new JilError('HEALTH_TIMEOUT', `${s.name} ${s.version} was not healthy within ${Math.round(timeoutMs / 1000)} s (${c.state}, health ${c.health})`, {
        hint: 'raise JIL_UPDATE_HEALTH_TIMEOUT if the service starts slowly, or fix its health check',
      })
    }
    await sleep(pollMs, undefined, {signal: ctx.signal}).catch(() => {})
  }
}

/**
 * Makes sure the engine has `repository@digest` whose signed manifest for the node's track verifies.
 * The manifest is checked before anything is pulled: unsigned software never reaches the engine.
 * Returns a refusal (the service is left as it is), or undefined when the image is ready.
 */
async function obtainImage(ctx: AgentContext, rt: Runtime, s: DesiredService, trust: NodeTrust): Promise<{code: string; message: string} | undefined> {
  const manifests = await manifestsFor(ctx, s.digest, {refresh: true})
  const verdict = verifyImage(trust, manifests, s.digest)
  if (!verdict.ok) return {code: verdict.code, message: verdict.message}
  // The labels carry the version and image the node reports and judges rollbacks by: they must be the signed ones.
  if (verdict.manifest.version !== s.version || verdict.manifest.image !== s.image) {
    return {code: 'MANIFEST_MISMATCH', message: `${s.digest} is signed as ${verdict.manifest.image} ${verdict.manifest.version}, not ${s.image} ${s.version}`}
  }
  const imageRef = `${s.repository}@${s.digest}`
  if (!(await rt.hasImage(imageRef))) {
    const {token} = await (await ctx.hq()).registryToken([s.image])
    await rt.pull(s.repository, s.digest, token)
  }
  return undefined
}

/** Replace: aside, stop, create, start, health-gate; then remove the old one, or put it back. */
async function replace(ctx: AgentContext, rt: Runtime, s: DesiredService, old: ContainerRef, pollMs: number): Promise<void> {
  const canonical = containerName(ctx.nodeId, s.name)
  const aside = oldName(canonical, old.id)
  if (old.name !== aside) await rt.rename(old.id, aside)
  let fresh: string | undefined
  try {
    await rt.stop(old.id, s.stop_timeout_s)
    fresh = await rt.create(ctx.nodeId, s, canonical)
    await rt.start(fresh)
    await waitStarted(ctx, rt, fresh, s, pollMs)
  } catch (err) {
    const restored = await (async () => {
      if (fresh) await rt.remove(fresh)
      await rt.rename(old.id, canonical)
      await rt.start(old.id)
    })().then(
      () => undefined,
      (e: unknown) => e,
    )
    if (restored !== undefined) {
      const e = errorOf(err)
      throw new JilError('RESTORE_FAILED', `${e.code}: ${e.message}; restoring the previous container failed too: ${messageOf(restored)}`, {hint: 'the service may be down: see docker ps -a; the next update run retries'})
    }
    throw err
  }
  await rt.remove(old.id)
}

/**
 * Carries out a plan, one service at a time: a replacement or a new container is created only from
 * an image whose signed manifest verifies for the node's track (else `refused`, that service left as
 * it is, the others carry on). Every action has its outcome in the result. Throws only when the
 * engine cannot be reached at all before the first action.
 */
export async function applyReconcile(ctx: AgentContext, desired: DesiredState, plan: readonly Action[], trust: NodeTrust, o: ApplyOptions = {}): Promise<ServiceOutcome[]> {
  const rt = await ctx.runtime()
  const pollMs = o.pollMs ?? 250
  const services = new Map(desired.services.map((s) => [s.name, s]))
  const refusedServices = new Set<string>()
  const out: ServiceOutcome[] = []
  // Stopping: /healthz already fails (it reads the applied document, written before this runs), so
  // the load balancer drains the node for JIL_DRAIN before its services go.
  let drained = desired.run_mode !== 'stopped' || ctx.settings.drainMs <= 0

  for (const a of plan) {
    if (a.kind === 'stop' && !drained) {
      drained = true
      ctx.log.info({drain_ms: ctx.settings.drainMs}, 'draining before the services stop')
      await sleep(ctx.settings.drainMs, undefined, {signal: ctx.signal}).catch(() => {})
    }
    const s = services.get(a.service)
    const from = a.kind === 'create' ? null : {version: a.container.version, digest: a.container.digest}
    const to = a.kind === 'create' || a.kind === 'replace' ? {version: s?.version ?? null, digest: s?.digest ?? null} : a.kind === 'remove' ? null : from
    const record = (outcome: ServiceOutcome['outcome'], error?: {code: string; message: string}) => {
      out.push({service: a.service, action: a.kind, from, to, outcome, ...(error ? {error} : {})})
      ctx.log[outcome === 'ok' ? 'info' : 'warn']({service: a.service, action: a.kind, outcome, ...(error ? {error} : {})}, 'reconcile')
    }
    if (ctx.signal.aborted) {
      record('failed', {code: 'UPDATE_ABORTED', message: 'the node is stopping: not attempted'})
      continue
    }
    if (refusedServices.has(a.service)) continue
    try {
      switch (a.kind) {
        case 'create':
        case 'replace': {
          if (!s) throw new JilError('INTERNAL', `no service ${a.service} in the desired state`)
          const refusal = await obtainImage(ctx, rt, s, trust)
          if (refusal) {
            refusedServices.add(a.service)
            record('refused', refusal)
            continue
          }
          if (a.kind === 'replace') {
            await replace(ctx, rt, s, a.container, pollMs)
          } else {
            // A new service that fails to start is left as it is, for the health agent and the operator.
            const id = await rt.create(ctx.nodeId, s, containerName(ctx.nodeId, s.name))
            await rt.start(id)
            await waitStarted(ctx, rt, id, s, pollMs)
          }
          break
        }
        case 'restore':
          await rt.rename(a.container.id, containerName(ctx.nodeId, a.service))
          break
        case 'start':
          await rt.start(a.container.id)
          break
        case 'stop':
          await rt.stop(a.container.id, s?.stop_timeout_s)
          break
        case 'remove':
          // A stop first, so the service gets its SIGTERM and stop timeout rather than a kill.
          if (LIVE.has(a.container.state)) await rt.stop(a.container.id)
          await rt.remove(a.container.id)
          break
      }
      record('ok')
    } catch (err) {
      record('failed', errorOf(err))
    }
  }
  return out
}
