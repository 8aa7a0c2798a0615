import chalk from 'chalk'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {ManualClock} from '../../src/shared/clock.js'
import {JilError} from '../../src/shared/errors.js'
import {App, parseCommand, type AppProps} from '../../src/tui/app.js'
import {eventually, fakeSource, fleetCommand, fleetNode, KEY, NOW, press, renderSized, snapshot, type FakeSource} from '../helpers/tui.js'

// See tui-views.test.tsx: chalk finds no terminal under vitest; force colours on so NO_COLOR is tested, not chalk.
const chalkLevel = chalk.level
beforeAll(() => {
  chalk.level = 1
})
afterAll(() => {
  chalk.level = chalkLevel
})

const COLOUR = /\u001B\[(3[0-8]|9[0-7])[;m]/
const strip = (s: string) => s.replace(/\u001B\[[0-9;]*m/g, '')

const NODES = [fleetNode({id: 'CH-ZUG-01'}), fleetNode({id: 'CH-ZUG-02'}), fleetNode({id: 'SG-MAS-01', zone: 'SG/MAS'})]

const mounted: {unmount: () => void}[] = []
afterEach(() => {
  for (const m of mounted.splice(0)) m.unmount()
})

/** The app on a fake source, at a fixed time, live once the test says ready. */
async function start(o: Partial<AppProps> & {source?: FakeSource; size?: {columns: number; rows: number}} = {}) {
  const source = o.source ?? fakeSource({snap: snapshot({nodes: NODES})})
  const clock = new ManualClock(NOW)
  const r = renderSized(<App source={source} clock={clock} feed={{throttleMs: 0, clock}} colors={false} {...o} />, o.size ?? {columns: 120, rows: 30})
  mounted.push(r)
  const frame = () => strip(r.lastFrame())
  await eventually(() => source.channels.length === 1, 'a subscription')
  return {...r, source, clock, frame, ready: async () => {
    source.channels.at(-1)!.push({type: 'ready', at: NOW.toISOString()})
    await eventually(() => frame().includes('● live'), 'live')
  }}
}

describe('the header', () => {
  it('shows HQ, the user and role, and the live/stale marker', async () => {
    const app = await start()
    expect(app.frame()).toContain('jil top  ◌ connecting…  https://hq.test:8443  alice (ops-lead)')
    await app.ready()
    app.clock.advance(90_000)
    app.source.channels[0]!.fail(new JilError('HQ_CLOSED', 'HQ at https://hq.test:8443 closed the connection (ECONNRESET)'))
    await eventually(() => app.frame().includes('jil top  ✗ STALE since 12:01:30Z, reconnecting  https://hq.test:8443  alice (ops-lead)  HQ at https://hq.test:8443'), 'the stale marker')
  })

  it('says read-only', async () => {
    const app = await start({readonly: true})
    expect(app.frame()).toContain('alice (ops-lead)  [read-only]')
  })
})

describe('the live stream', () => {
  it('redraws the node table for a change on screen, not for a heartbeat of a node off screen', async () => {
    const many = Array.from({length: 100}, (_, i) => fleetNode({id: `CH-N${String(i).padStart(5, '0')}-01`}))
    const app = await start({source: fakeSource({snap: snapshot({nodes: many})}), initialView: 'nodes'})
    await app.ready()
    await eventually(() => app.frame().includes('100 of 100 nodes'), 'the table')
    await press(app.stdin)
    const frames = app.stdout.frames.length
    // Sorted by id, rows 0–20 or so are on screen: node 90 is not.
    app.source.channels[0]!.push({type: 'nodes', nodes: [{...many[90]!, system: {...many[90]!.system!, cpu_percent: 91}}]})
    await press(app.stdin)
    await new Promise((r) => setTimeout(r, 50))
    expect(app.stdout.frames.length).toBe(frames)
    app.source.channels[0]!.push({type: 'nodes', nodes: [{...many[1]!, system: {...many[1]!.system!, cpu_percent: 87}}]})
    await eventually(() => /CH-N00001-01 .* 87%/.test(app.frame()), 'the row on screen')
    expect(app.stdout.frames.length).toBeGreaterThan(frames)
    // Node 90's new copy is there when it comes on screen.
    await press(app.stdin, 'G')
    expect(app.frame()).toMatch(/CH-N00090-01 .* 91%/)
  })
})

describe('keys', () => {
  it('switches views with 1–7, :name, ? and quits with q', async () => {
    const app = await start()
    await app.ready()
    expect(app.frame()).toContain('[1 Overview]')
    await press(app.stdin, '2')
    expect(app.frame()).toContain('[2 Nodes]')
    expect(app.frame()).toContain('3 of 3 nodes')
    await press(app.stdin, ':', 'al')
    expect(app.frame()).toContain(':al▏')
    await press(app.stdin, KEY.enter)
    expect(app.frame()).toContain('[4 Alerts]')
    await press(app.stdin, ':images\r')
    expect(app.frame()).toContain('[3 Images]')
    await press(app.stdin, ':', 'zzz', KEY.enter)
    expect(app.frame()).toContain('no view "zzz": try :overview :nodes')
    await press(app.stdin, '?')
    expect(app.frame()).toContain('[7 Help]')
    await press(app.stdin, '5')
    expect(app.frame()).toContain('[5 Security]')
    const exited = app.waitUntilExit()
    await press(app.stdin, 'q')
    await exited
  })

  it('types q and digits into the filter instead of acting on them', async () => {
    const app = await start({initialView: 'nodes'})
    await app.ready()
    await press(app.stdin, '/', 'q2')
    expect(app.frame()).toContain('/q2▏')
    expect(app.frame()).toContain('[2 Nodes]')
    await press(app.stdin, KEY.esc, '1')
    expect(app.frame()).toContain('[1 Overview]')
  })

  it('parses :commands by unique prefix', () => {
    expect([parseCommand('no'), parseCommand('b'), parseCommand('q'), parseCommand('s'), parseCommand('xx')]).toEqual(['nodes', 'broadcast', 'quit', 'security', null])
  })
})

describe('from the node list to an action', () => {
  it('filters to a zone, opens a node, pauses it after confirmation and follows its status from the stream', async () => {
    const app = await start({initialView: 'nodes'})
    await app.ready()
    await press(app.stdin, '/', 'zone:CH/FINMA', KEY.enter)
    expect(app.frame()).toContain('2 of 3 nodes')
    expect(app.frame()).not.toContain('SG-MAS-01')
    await press(app.stdin, KEY.down, KEY.enter)
    await eventually(() => app.frame().includes('desired vs applied'), 'the detail')
    expect(app.frame()).toContain('CH-ZUG-02  CH/FINMA  mainnet')
    await press(app.stdin, 'p')
    expect(app.frame()).toContain('Pause CH-ZUG-02: fail /healthz so traffic drains (services keep running)? [y/N]')
    await press(app.stdin, 'y')
    await eventually(() => app.frame().includes('✓ runMode done'), 'the result line')
    expect(app.source.calls).toContainEqual(['runMode', 'CH-ZUG-02', 'pause'])
    app.source.channels[0]!.push({type: 'nodes', nodes: [fleetNode({id: 'CH-ZUG-02', status: 'paused', run_mode: 'paused'})]})
    await eventually(() => app.frame().includes('paused  run mode paused'), 'the new status')
    // The detail follows the row's change with one fetch, not a poll.
    await eventually(() => app.source.calls.filter((c) => c[0] === 'nodeDetail').length === 2, 'a refetch')
    await press(app.stdin, KEY.esc)
    expect(app.frame()).toContain('[2 Nodes]')
    expect(app.frame()).toMatch(/CH-ZUG-02\s+CH\/FINMA\s+paused/)
  })

  it('shows HQ\'s 403 as such', async () => {
    const source = fakeSource({
      snap: snapshot({nodes: NODES}),
      runMode: async () => Promise.reject(new JilError('FORBIDDEN', 'role viewer lacks the permission nodes:operate', {status: 403, hint: 'ask an admin; roles with nodes:operate: admin, ops-lead'})),
    })
    const app = await start({source, initialView: 'nodes', size: {columns: 220, rows: 30}})
    await app.ready()
    await press(app.stdin, KEY.enter)
    await eventually(() => app.frame().includes('desired vs applied'), 'the detail')
    await press(app.stdin, 't', 'y')
    await eventually(() => app.frame().includes('✗ stop CH-ZUG-01: FORBIDDEN (403 forbidden): role viewer lacks the permission nodes:operate (ask an admin; roles with nodes:operate: admin, ops-lead)'), 'the refusal')
  })

  it('--readonly hides the actions and does not send them', async () => {
    const app = await start({initialView: 'nodes', readonly: true})
    await app.ready()
    await press(app.stdin, KEY.enter)
    await eventually(() => app.frame().includes('read-only: actions hidden'), 'the detail')
    await press(app.stdin, 'p', 'y', 'X')
    expect(app.frame()).not.toContain('[y/N]')
    expect(app.source.calls.filter((c) => c[0] !== 'nodeDetail')).toEqual([])
  })
})

describe('broadcast', () => {
  it('sends and shows each node\'s answer as commands stream in', async () => {
    const app = await start({initialView: 'broadcast'})
    await app.ready()
    await press(app.stdin, KEY.enter, 'y')
    await eventually(() => app.frame().includes('refresh sent to 1 node(s)'), 'sent')
    expect(app.source.calls).toContainEqual(['broadcast', 'refresh', {all: true}])
    expect(app.frame()).toMatch(/CH-ZUG-01\s+pending/)
    app.source.channels[0]!.push({type: 'commands', commands: [fleetCommand({status: 'succeeded', result: {ok: true, summary: 'reconciled: 2 services up to date'}})]})
    await eventually(() => /CH-ZUG-01\s+succeeded\s+reconciled: 2 services up to date/.test(app.frame()), 'the answer')
    expect(app.frame()).toContain('refresh → all: 1/1 succeeded')
  })
})

describe('terminals', () => {
  it('fits a narrow terminal without wrapping', async () => {
    const app = await start({initialView: 'nodes', size: {columns: 80, rows: 24}})
    await app.ready()
    const f = app.frame()
    expect(f).not.toContain('CPU')
    for (const line of f.split('\n')) expect(line.length).toBeLessThanOrEqual(80)
    expect(f.split('\n').length).toBeLessThan(24)
    for (const v of ['overview', 'alerts', 'security', 'broadcast', 'help']) {
      await press(app.stdin, ':', v, KEY.enter)
      for (const line of app.frame().split('\n')) expect(line.length, `${v}: ${line}`).toBeLessThanOrEqual(80)
    }
  })

  it('writes no colour under NO_COLOR, and colours otherwise', async () => {
    const plain = await start({colors: false})
    await plain.ready()
    expect(plain.lastFrame()).not.toMatch(COLOUR)
    const coloured = await start({colors: true})
    await coloured.ready()
    expect(coloured.lastFrame()).toMatch(COLOUR)
  })
})
