import {describe, expect, it} from 'vitest'

import {isReplaceLeftover, oldName, planReconcile, runningVersions, type Action} from '../../src/node/reconcile.js'
import {containerName, type ContainerState, type ManagedContainer} from '../../src/node/runtime.js'
import {serviceSpecHash, type DesiredService, type DesiredState, type RunMode} from '../../src/shared/stack.js'

const NODE = 'CH-PLAN-01'
const OTHER = 'SG-PLAN-02'
const D1 = 'sha256:' + '1'.repeat(64)
const D2 = 'sha256:' + '2'.repeat(64)

function service(name: string, digest = D1, version = 'v1.0', extra: Partial<DesiredService> = {}): DesiredService {
  return {name, image: 'jil/busybox', repository: '127.0.0.1:5000/jil/busybox', digest, version, command: ['sleep', '3600'], critical: true, network: 'none', ...extra}
}

function desired(services: DesiredService[], runMode: RunMode = 'running', unresolved: string[] = []): DesiredState {
  return {
    kind: 'jil.desired-state/v1',
    node_id: NODE,
    zone: 'CH/FINMA',
    track: 'devnet',
    sequence: 1,
    issued_at: '2026-01-01T00:00:00Z',
    expires_at: '2026-01-02T00:00:00Z',
    run_mode: runMode,
    config_version: 1,
    stack_version: 1,
    services,
    unresolved,
    key_id: 'k',
    signature: 's',
  }
}

let seq = 0
/** A container as the runtime lists it, made from `s` unless told otherwise. */
function container(s: DesiredService, o: {state?: ContainerState; name?: string; node?: string; spec?: string | null} = {}): ManagedContainer {
  const node = o.node ?? NODE
  const id = `c${String(++seq).padStart(3, '0')}` + 'f'.repeat(60)
  return {
    id,
    name: o.name ?? containerName(node, s.name),
    nodeId: node,
    service: s.name,
    image: `${s.repository}@${s.digest}`,
    digest: s.digest,
    version: s.version,
    specHash: o.spec === undefined ? serviceSpecHash(s) : o.spec,
    critical: s.critical,
    state: o.state ?? 'running',
    health: 'none',
    labels: {},
  }
}

const brief = (plan: Action[]) => plan.map((a) => ('container' in a ? `${a.kind} ${a.service} ${a.container.name}${a.kind === 'remove' ? ` (${a.reason})` : ''}` : `${a.kind} ${a.service}`))

describe('planReconcile', () => {
  const api = service('api')
  const worker = service('worker', D1, 'v1.0', {command: ['sleep', '7200']})

  it('creates every service of a fresh node, in the document order', () => {
    expect(brief(planReconcile(desired([api, worker]), []))).toEqual(['create api', 'create worker'])
  })

  it('does nothing when every container matches its spec and runs', () => {
    expect(planReconcile(desired([api, worker]), [container(worker), container(api)])).toEqual([])
  })

  it('replaces a container made from another digest, and one whose spec changed with the same digest', () => {
    const oldApi = container(service('api', D2, 'v0.9'))
    const oldWorker = container(service('worker', D1, 'v1.0', {command: ['sleep', '1']}))
    const plan = planReconcile(desired([api, worker]), [oldApi, oldWorker])
    expect(brief(plan)).toEqual([`replace api ${oldApi.name}`, `replace worker ${oldWorker.name}`])
    expect(plan[0]).toMatchObject({container: {id: oldApi.id, digest: D2, version: 'v0.9'}})
    // A container without a spec label (made by hand or by an older jil) is replaced too.
    expect(brief(planReconcile(desired([api]), [container(api, {spec: null})]))).toEqual([`replace api ${containerName(NODE, 'api')}`])
  })

  it('starts an exited or created container whose spec is unchanged; never one whose spec changed', () => {
    expect(brief(planReconcile(desired([api, worker]), [container(api, {state: 'exited'}), container(worker, {state: 'created'})]))).toEqual([
      `start api ${containerName(NODE, 'api')}`,
      `start worker ${containerName(NODE, 'worker')}`,
    ])
    expect(brief(planReconcile(desired([api]), [container(service('api', D2), {state: 'exited'})]))).toEqual([`replace api ${containerName(NODE, 'api')}`])
  })

  it('removes unlisted services and duplicates, last and sorted by name', () => {
    const gone = container(service('legacy'))
    const dup = container(api, {name: 'jil-ch-plan-01-api-copy'})
    const plan = planReconcile(desired([api, service('zeta')]), [gone, container(api), dup])
    expect(brief(plan)).toEqual(['create zeta', 'remove api jil-ch-plan-01-api-copy (duplicate)', 'remove legacy jil-ch-plan-01-legacy (unlisted)'])
  })

  it('stops every listed container when stopped and removes none of them; unlisted ones still go', () => {
    const plan = planReconcile(desired([api, worker], 'stopped'), [container(api), container(worker, {state: 'exited'}), container(service('legacy'))])
    expect(brief(plan)).toEqual([`stop api ${containerName(NODE, 'api')}`, 'remove legacy jil-ch-plan-01-legacy (unlisted)'])
    // Stopped never creates nor replaces.
    expect(planReconcile(desired([api, worker], 'stopped'), [container(service('api', D2))]).map((a) => a.kind)).toEqual(['stop'])
  })

  it('changes nothing when paused, not even a missing service or an unlisted container', () => {
    expect(planReconcile(desired([api, worker], 'paused'), [container(service('api', D2), {state: 'exited'}), container(service('legacy'))])).toEqual([])
  })

  it('never plans for another node\'s containers, even when handed them', () => {
    const theirs = [container(api, {node: OTHER}), container(service('legacy'), {node: OTHER}), container(service('api', D2), {node: OTHER, state: 'exited'})]
    expect(brief(planReconcile(desired([api]), theirs))).toEqual(['create api'])
    expect(planReconcile(desired([api]), [...theirs, container(api)])).toEqual([])
    expect(planReconcile(desired([api], 'stopped'), theirs)).toEqual([])
  })

  it('leaves containers of unresolved services alone (they are still in the stack)', () => {
    expect(planReconcile(desired([api], 'running', ['indexer']), [container(api), container(service('indexer'))])).toEqual([])
  })

  describe('leftovers of an interrupted replace', () => {
    const canonical = containerName(NODE, 'api')

    it('removes the -old- container once the canonical one runs', () => {
      const left = container(service('api', D2, 'v0.9'), {name: oldName(canonical, 'abcdef123456ffff'), state: 'exited'})
      expect(brief(planReconcile(desired([api]), [left, container(api)]))).toEqual([`remove api ${left.name} (leftover)`])
    })

    it('keeps it while the canonical one does not run yet (it is the way back)', () => {
      const left = container(service('api', D2, 'v0.9'), {name: oldName(canonical, 'abcdef123456ffff'), state: 'exited'})
      expect(brief(planReconcile(desired([api]), [left, container(api, {state: 'exited'})]))).toEqual([`start api ${canonical}`])
    })

    it('gives a leftover that is all there is its canonical name back when it matches, and starts it', () => {
      const left = container(api, {name: oldName(canonical, 'abcdef123456ffff'), state: 'exited'})
      expect(brief(planReconcile(desired([api]), [left]))).toEqual([`restore api ${left.name}`, `start api ${left.name}`])
    })

    it('replaces a leftover that is all there is when it is an older version', () => {
      const left = container(service('api', D2, 'v0.9'), {name: oldName(canonical, 'abcdef123456ffff'), state: 'exited'})
      expect(brief(planReconcile(desired([api]), [left]))).toEqual([`replace api ${left.name}`])
    })
  })

  it('is deterministic whatever order the runtime lists containers in', () => {
    const cs = [container(service('legacy')), container(service('old')), container(service('api', D2)), container(api, {name: 'jil-ch-plan-01-api-2'})]
    const a = planReconcile(desired([api, worker]), cs)
    const b = planReconcile(desired([api, worker]), [...cs].reverse())
    expect(b).toEqual(a)
    expect(a.map((x) => x.kind)).toEqual(['replace', 'create', 'remove', 'remove', 'remove'])
  })
})

describe('runningVersions', () => {
  it('reads the version of each service\'s canonical container, only this node\'s', () => {
    const v = runningVersions(NODE, [
      container(service('api', D2, 'v2.0'), {name: oldName(containerName(NODE, 'api'), 'abc')}),
      container(service('api', D1, 'v1.5')),
      container(service('worker', D1, 'v3.0'), {node: OTHER}),
    ])
    expect([...v]).toEqual([['api', 'v1.5']])
  })
})

describe('isReplaceLeftover', () => {
  it('names the old container of a replace of this node\'s service, and nothing else', () => {
    const canonical = containerName(NODE, 'api')
    expect(isReplaceLeftover(NODE, {name: oldName(canonical, 'abcdef123456789'), service: 'api'})).toBe(true)
    expect(isReplaceLeftover(NODE, {name: canonical, service: 'api'})).toBe(false)
    expect(isReplaceLeftover(NODE, {name: oldName(containerName(OTHER, 'api'), 'abc'), service: 'api'})).toBe(false)
    expect(isReplaceLeftover(NODE, {name: oldName(canonical, 'abc'), service: 'worker'})).toBe(false)
  })
})

describe('version floors', () => {
  it('keep the lowest version each listed image runs, and the floor of an image no longer listed', async () => {
    const {nextFloors} = await import('../../src/node/agents/update.js')
    const a = service('api', D1, 'v2.0')
    const b = service('api-b', D2, 'v1.5')
    const running = [container(a), container(b)]
    // Two services of one image pinned apart: the floor is the lower, so neither is refused later.
    expect(nextFloors({}, desired([a, b]), running)).toEqual({[a.image]: 'v1.5'})
    // An image whose services were all removed keeps its floor (adding it back lower needs a rollback).
    expect(nextFloors({'jil/gone': 'v9.0'}, desired([a]), [container(a)])).toEqual({'jil/gone': 'v9.0', [a.image]: 'v2.0'})
    // A service listed but not running yet does not move the floor.
    expect(nextFloors({[a.image]: 'v3.0'}, desired([a]), [])).toEqual({[a.image]: 'v3.0'})
  })
})
