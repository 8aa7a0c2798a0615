import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {pino} from 'pino'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {startCommandLoop} from '../../src/daemon/command-loop.js'
import {executeCommands, rebootHost, refreshResult, type CommandIo} from '../../src/node/commands.js'
import {readAgentRecord, writeAgentRecord} from '../../src/node/state.js'
import type {AgentReport, CommandResult, NodeCommand} from '../../src/shared/api.js'
import {ManualClock} from '../../src/shared/clock.js'

const silent = pino({level: 'silent'})
const cmd = (id: string, command: NodeCommand['command'], deliveries = 1): NodeCommand => ({id, command, created_at: '2026-01-01T00:00:00Z', expires_at: '2026-01-01T00:15:00Z', deliveries})

function fakeIo(): CommandIo & {calls: string[]; sent: [string, CommandResult][]} {
  const calls: string[] = []
  const sent: [string, CommandResult][] = []
  return {
    calls,
    sent,
    refresh: async () => (calls.push('refresh'), {ok: true, summary: 'applied'}),
    cycle: async () => {
      calls.push('cycle')
      throw new Error('engine gone')
    },
    reboot: async () => (calls.push('reboot'), {ok: true, summary: 'rebooting'}),
    send: async (id, r) => void sent.push([id, r]),
  }
}

describe('executeCommands: each id once, every answer sent', () => {
  let dir: string
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'jil-cmd-'))))
  afterEach(async () => rm(dir, {recursive: true, force: true}))

  it('maps run-mode commands to a refresh, turns a throw into a failed result, and never runs an id twice', async () => {
    const io = fakeIo()
    const o = {stateDir: dir, clock: new ManualClock(), log: silent, io}
    const runs = await executeCommands(o, [cmd('cmd_a', 'pause'), cmd('cmd_b', 'cycle'), cmd('cmd_c', 'reboot')])
    expect(io.calls).toEqual(['refresh', 'cycle', 'reboot'])
    expect(runs.map((r) => [r.id, r.ran, r.result.ok, r.sent])).toEqual([
      ['cmd_a', true, true, true],
      ['cmd_b', true, false, true],
      ['cmd_c', true, true, true],
    ])
    expect(runs[1]!.result).toEqual({ok: false, summary: 'cycle failed: engine gone', error: {code: 'INTERNAL', message: 'engine gone'}})
    // Delivered again: nothing runs, the stored answers go out again.
    const again = await executeCommands(o, [cmd('cmd_a', 'pause', 2), cmd('cmd_b', 'cycle', 2)])
    expect(io.calls).toHaveLength(3)
    expect(again.map((r) => [r.id, r.ran, r.result])).toEqual([
      ['cmd_a', false, runs[0]!.result],
      ['cmd_b', false, runs[1]!.result],
    ])
  })

  it('answers an id its process died running as interrupted (a reboot as done), without running it', async () => {
    await writeAgentRecord(dir, 'fleet-commands', {commands: {cmd_x: {command: 'cycle', started_at: '2026-01-01T00:00:00Z'}, cmd_r: {command: 'reboot', started_at: '2026-01-01T00:00:00Z'}}})
    const io = fakeIo()
    const runs = await executeCommands({stateDir: dir, clock: new ManualClock(), log: silent, io}, [cmd('cmd_x', 'cycle', 2), cmd('cmd_r', 'reboot', 2)])
    expect(io.calls).toEqual([])
    expect(runs.map((r) => [r.result.ok, r.result.error?.code])).toEqual([
      [false, 'COMMAND_INTERRUPTED'],
      [true, undefined],
    ])
    expect((await readAgentRecord<{commands: Record<string, {result?: unknown}>}>(dir, 'fleet-commands'))?.commands.cmd_x?.result).toEqual(runs[0]!.result)
  })
})

describe('what the commands mean', () => {
  it('reboot: without JIL_REBOOT_COMMAND a succeeded no-op; with one its exit status', async () => {
    expect(await rebootHost(undefined)).toEqual({ok: true, summary: 'reboot requested; no JIL_REBOOT_COMMAND configured', details: {ran: false}})
    expect(await rebootHost('echo going down')).toEqual({ok: true, summary: 'reboot command ran (exit 0)', details: {ran: true, output: 'going down'}})
    expect(await rebootHost('echo no >&2; exit 3')).toMatchObject({ok: false, summary: 'reboot command failed (exit 3)', error: {code: 'REBOOT_FAILED', message: 'exit 3: no'}})
  })

  it('refresh: succeeded only when the document applied and no action failed', () => {
    const report = (o: Partial<AgentReport>): AgentReport => ({agent: 'update', node_id: 'CH-ZUG-01', started_at: '', finished_at: '', ok: true, summary: 's', findings: [], details: {}, ...o})
    expect(refreshResult(report({details: {sequence: 3, run_mode: 'paused', actions: [{outcome: 'ok'}]}}))).toEqual({ok: true, summary: 's', details: {sequence: 3, run_mode: 'paused', findings: 0}})
    expect(refreshResult(report({details: {actions: [{outcome: 'failed'}]}}))).toMatchObject({ok: false, error: {code: 'ACTIONS_FAILED'}})
    expect(refreshResult(report({details: {refused: {code: 'DS_EXPIRED', message: 'old'}}}))).toMatchObject({ok: false, error: {code: 'DS_EXPIRED'}})
    expect(refreshResult(report({ok: false, error: {code: 'HQ_UNREACHABLE', message: 'x'}}))).toMatchObject({ok: false, error: {code: 'HQ_UNREACHABLE'}})
  })
})

describe('the command loop', () => {
  it('reconnects after failures, runs what arrives, and stop() aborts the poll in flight', async () => {
    const executed: string[][] = []
    let polls = 0
    let aborted = false
    let hold: (() => void) | undefined
    const held = new Promise<void>((r) => (hold = r))
    const loop = startCommandLoop({
      log: silent,
      backoff: {minMs: 1, maxMs: 2},
      fetch: (_w, signal) => {
        polls++
        if (polls <= 2) return Promise.reject(new Error('HQ away'))
        if (polls === 3) return Promise.resolve([cmd('cmd_1', 'refresh')])
        hold!()
        return new Promise((_, reject) => signal.addEventListener('abort', () => ((aborted = true), reject(new Error('aborted')))))
      },
      execute: async (cs) => void executed.push(cs.map((c) => c.id)),
    })
    await held
    expect(executed).toEqual([['cmd_1']])
    await loop.stop()
    expect(aborted).toBe(true)
    expect(polls).toBe(4)
  })
})
