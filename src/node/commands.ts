import {execFile} from 'node:child_process'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import type {Logger} from 'pino'

import type {AgentReport, CommandResult, NodeCommand, NodeCommandName} from '../shared/api.js'
import type {Clock} from '../shared/clock.js'
import {JilError, messageOf} from '../shared/errors.js'
import {lockFile, type FileLock} from '../shared/files.js'
import type {AgentContext} from './agents/types.js'
import {waitStarted} from './reconcile.js'
import {containerName} from './runtime.js'
import {lockContainersWhenFree, readAgentRecord, readAppliedDesiredState, writeAgentRecord} from './state.js'

/**
 * Fleet commands on the node (DESIGN.md §5, issue 7): each command id runs at most once, however
 * often HQ delivers it (a lost answer, a restart mid-way): the ids are recorded in the state dir
 * before they run, with their result after. A redelivered id that finished sends its stored result
 * again; one that was interrupted (the process died while running it) is answered as interrupted.
 * What each command does is injected (CommandIo), so the dispatch is tested without a node.
 */

/** The meanings: run-mode changes arrive as `refresh` after HQ changed the desired state; a direct pause/resume/stop/start does the same. */
export type CommandIo = {
  /** Fetch the desired state and reconcile now. */
  refresh(): Promise<CommandResult>
  /** Rolling restart of the node's running services. */
  cycle(): Promise<CommandResult>
  /** The configured host reboot command. */
  reboot(): Promise<CommandResult>
  /** Sends a command's result to HQ. */
  send(id: string, result: CommandResult): Promise<void>
}

const MEANING: Readonly<Record<NodeCommandName, keyof Omit<CommandIo, 'send'>>> = {
  refresh: 'refresh',
  pause: 'refresh',
  resume: 'refresh',
  stop: 'refresh',
  start: 'refresh',
  cycle: 'cycle',
  reboot: 'reboot',
}

/** agents/fleet-commands.json: the ids this node has run (newest KEEP), with their results. */
export const EXECUTED_RECORD = 'fleet-commands'
/** HQ expires an unanswered command within 15 minutes; far more than that many commands never arrive in that time. */
const KEEP = 500
const LOCK = 'commands.lock'

type Executed = {command: NodeCommandName; started_at: string; finished_at?: string; result?: CommandResult}
type ExecutedRecord = {commands: Record<string, Executed>}

export type CommandRun = {id: string; command: NodeCommandName; ran: boolean; result: CommandResult; sent: boolean}

export type ExecuteOptions = {stateDir: string; clock: Clock; log: Logger; io: CommandIo}

/**
 * Runs the given commands in order, each id once, and sends each result. Returns what happened to
 * each; a result HQ did not take (unreachable) is kept, and sent again on the redelivery.
 * Another process of this node running commands now (cron runs overlapping): returns [] and leaves
 * the commands to it (HQ redelivers whatever it does not answer).
 */
export async function executeCommands(o: ExecuteOptions, commands: readonly NodeCommand[]): Promise<CommandRun[]> {
  if (commands.length === 0) return []
  let lock: FileLock
  try {
    lock = await lockFile(join(o.stateDir, LOCK), 'commands', (other) => new JilError('COMMANDS_BUSY', `process ${other.pid} is running fleet commands`, {hint: 'it answers them'}))
  } catch (err) {
    if (err instanceof JilError && err.code === 'COMMANDS_BUSY') {
      o.log.info({err: err.message}, 'fleet commands left to the process running them')
      return []
    }
    throw err
  }
  const out: CommandRun[] = []
  try {
    const record = (await readAgentRecord<ExecutedRecord>(o.stateDir, EXECUTED_RECORD)) ?? {commands: {}}
    for (const c of commands) {
      const seen = record.commands[c.id]
      let result: CommandResult
      let ran = false
      if (seen?.result) {
        result = seen.result
      } else if (seen) {
        // Recorded as started, never finished: the process running it died (we hold the lock).
        result =
          c.command === 'reboot'
            ? {ok: true, summary: 'the reboot command ran; the node restarted before it could answer'}
            : {ok: false, summary: `${c.command} was interrupted (the node's process stopped while running it)`, error: {code: 'COMMAND_INTERRUPTED', message: `${c.command} did not finish`}}
        record.commands[c.id] = {...seen, finished_at: o.clock.now().toISOString(), result}
        await save(o.stateDir, record)
      } else {
        record.commands[c.id] = {command: c.command, started_at: o.clock.now().toISOString()}
        await save(o.stateDir, record)
        ran = true
        o.log.info({command: c.command, id: c.id}, 'running fleet command')
        result = await run(o.io, c.command)
        record.commands[c.id] = {...record.commands[c.id]!, finished_at: o.clock.now().toISOString(), result}
        await save(o.stateDir, record)
        o.log[result.ok ? 'info' : 'warn']({command: c.command, id: c.id, ok: result.ok, summary: result.summary}, 'fleet command done')
      }
      let sent = false
      try {
        await o.io.send(c.id, result)
        sent = true
      } catch (err) {
        // Expired meanwhile, or HQ away: the result is kept; a redelivery sends it again.
        o.log.warn({id: c.id, err: messageOf(err), code: err instanceof JilError ? err.code : undefined}, 'could not send the command result to HQ')
      }
      out.push({id: c.id, command: c.command, ran, result, sent})
    }
  } finally {
    await lock.release()
  }
  return out
}

async function run(io: CommandIo, command: NodeCommandName): Promise<CommandResult> {
  try {
    return clipResult(await io[MEANING[command]]())
  } catch (err) {
    const e = err instanceof JilError ? err : new JilError('INTERNAL', messageOf(err))
    return clipResult({ok: false, summary: `${command} failed: ${e.message}`, error: {code: e.code, message: e.message}, ...(e.hint ? {details: {hint: e.hint}} : {})})
  }
}

async function save(stateDir: string, record: ExecutedRecord): Promise<void> {
  const ids = Object.keys(record.commands)
  // Oldest first by start time: the newest KEEP stay (an id HQ still redelivers is among them).
  if (ids.length > KEEP) {
    const drop = ids.sort((a, b) => record.commands[a]!.started_at.localeCompare(record.commands[b]!.started_at)).slice(0, ids.length - KEEP)
    for (const id of drop) delete record.commands[id]
  }
  await writeAgentRecord(stateDir, EXECUTED_RECORD, record)
}

const clip = (s: string, max = 1000) => (s.length <= max ? s : `${s.slice(0, max - 1)}…`)

/** The wire schema bounds these (HQ refuses a longer one with 400). */
function clipResult(r: CommandResult): CommandResult {
  return {...r, summary: clip(r.summary), ...(r.error ? {error: {code: r.error.code.slice(0, 100), message: clip(r.error.message)}} : {})}
}

// ---------------------------------------------------------------------------------------------
// What the commands do on a real node

/** An update agent's report as a command's result: a refresh succeeded when the document applied and nothing failed. */
export function refreshResult(r: AgentReport): CommandResult {
  const d = r.details as {sequence?: unknown; run_mode?: unknown; refused?: {code: string; message: string}; actions?: {outcome?: string}[]}
  const failed = (d.actions ?? []).filter((a) => a.outcome === 'failed').length
  const ok = r.ok && !d.refused && failed === 0
  const error = r.error ?? (d.refused ? {code: d.refused.code, message: d.refused.message} : failed ? {code: 'ACTIONS_FAILED', message: `${failed} reconcile action(s) failed`} : undefined)
  return {ok, summary: r.summary, ...(ok || !error ? {} : {error}), details: {sequence: d.sequence ?? null, run_mode: d.run_mode ?? null, findings: r.findings.length}}
}

/** How long a command waits for the update agent when another run holds the node's containers. */
const BUSY_WAIT_MS = 10 * 60_000

/**
 * The real CommandIo of a node. `refresh` defaults to an update agent run (its report goes to HQ
 * like any update run's); the daemon passes its own, through its scheduler's single-flight lock.
 */
export function nodeCommandIo(ctx: AgentContext, o: {refresh?: () => Promise<AgentReport>; pollMs?: number} = {}): CommandIo {
  return {
    async refresh() {
      if (o.refresh) return refreshResult(await o.refresh())
      const {runAgent} = await import('./agents/run.js')
      for (let waited = 0; ; waited += 2_000) {
        const r = await runAgent('update', ctx)
        if (r.error?.code !== 'UPDATE_BUSY' || waited >= BUSY_WAIT_MS || ctx.signal.aborted) return refreshResult(r)
        await sleep(2_000, undefined, {signal: ctx.signal}).catch(() => {})
      }
    },
    cycle: () => cycleServices(ctx, o.pollMs ?? 250),
    reboot: () => rebootHost(ctx.settings.rebootCommand),
    async send(id, result) {
      await (await ctx.hq()).commandResult(id, result)
    },
  }
}

/**
 * `cycle`: restarts the node's running services one at a time, in the desired state's order, each
 * waiting until healthy (or running through its grace period) before the next; the first that does
 * not come back halts the cycle, so one bad service never takes the others down with it. Holds the
 * containers lock like an update (health does not restart what is being cycled).
 */
export async function cycleServices(ctx: AgentContext, pollMs = 250): Promise<CommandResult> {
  const lock = await lockContainersWhenFree(ctx.stateDir, 'update', {waitMs: BUSY_WAIT_MS, signal: ctx.signal, pollMs: 500})
  try {
    const desired = await readAppliedDesiredState(ctx.stateDir)
    if (!desired) throw new JilError('NO_DESIRED_STATE', 'the node has applied no desired state yet: nothing to cycle', {hint: 'send a refresh first'})
    const rt = await ctx.runtime()
    const containers = await rt.list(ctx.nodeId)
    const restarted: string[] = []
    for (const s of desired.services) {
      const c = containers.find((x) => x.service === s.name && x.name === containerName(ctx.nodeId, s.name) && x.state === 'running')
      if (!c) continue
      if (ctx.signal.aborted) throw new JilError('CYCLE_ABORTED', `the node is stopping; restarted so far: ${restarted.join(', ') || 'none'}`)
      try {
        await rt.restart(c.id, s.stop_timeout_s)
        await waitStarted(ctx, rt, c.id, s, pollMs)
      } catch (err) {
        const e = err instanceof JilError ? err : new JilError('INTERNAL', messageOf(err))
        return {
          ok: false,
          summary: `cycle halted at ${s.name} (${e.code}); restarted before it: ${restarted.join(', ') || 'none'}`,
          error: {code: e.code, message: e.message},
          details: {restarted, failed: s.name},
        }
      }
      restarted.push(s.name)
    }
    const summary = restarted.length ? `restarted ${restarted.length} service${restarted.length === 1 ? '' : 's'} one by one: ${restarted.join(', ')}` : `nothing to cycle: no service is running (run mode ${desired.run_mode})`
    return {ok: true, summary, details: {restarted}}
  } finally {
    await lock.release()
  }
}


/** `reboot`: the host command the operator configured (JIL_REBOOT_COMMAND), or only a report. */
export async function rebootHost(command: string | undefined, timeoutMs = 5 * 60_000): Promise<CommandResult> {
  if (!command) return {ok: true, summary: 'reboot requested; no JIL_REBOOT_COMMAND configured', details: {ran: false}}
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', command], {timeout: timeoutMs, maxBuffer: 1024 * 1024}, (err, stdout, stderr) => {
      const output = clip(`${stdout}${stderr}`.trim(), 2000)
      if (!err) {
        resolve({ok: true, summary: `reboot command ran (exit 0)`, details: {ran: true, output}})
        return
      }
      const code = typeof (err as {code?: unknown}).code === 'number' ? (err as {code: number}).code : null
      resolve({
        ok: false,
        summary: `reboot command failed${code !== null ? ` (exit ${code})` : `: ${err.message}`}`,
        error: {code: 'REBOOT_FAILED', message: clip(code !== null ? `exit ${code}: ${output}` : err.message)},
        details: {ran: true, output},
      })
    })
  })
}

/** Cron mode: the health run takes the node's pending commands without waiting and runs them. */
export async function pickUpCommands(ctx: AgentContext, io: CommandIo = nodeCommandIo(ctx)): Promise<CommandRun[]> {
  const {commands} = await (await ctx.hq()).nodeCommands(0)
  return executeCommands({stateDir: ctx.stateDir, clock: ctx.clock, log: ctx.log, io}, commands)
}
