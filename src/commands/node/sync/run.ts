import {Flags} from '@oclif/core'

import {JilCommand} from '../../../base-command.js'

export type NodeSyncRunReady = {node_id: string; pid: number}

export default class NodeSyncRun extends JilCommand {
  // The daemon runs sync when it is configured; this foreground form serves tests, `jil dev` and debugging.
  static override hidden = true
  static override summary = 'Run event sync (relay and applier) in the foreground, without the daemon.'
  static override description = `Same settings as the daemon's sync (JIL_SYNC_TRANSPORT, JIL_NODE_DATABASE_URL, JIL_SYNC_LOG_URL or REDPANDA_SEEDS, JIL_SYNC_TABLES). With --json, prints one line {"node_id", "pid"} once running. SIGTERM stops it after the batch in flight.`

  static override flags = {
    'state-dir': Flags.string({description: "The node's state dir.", env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(NodeSyncRun)
    const [{runNodeSync}, {resolveStateDir}, {systemClock}, {daemonLogger}] = await Promise.all([
      import('../../../sync/node.js'),
      import('../../../node/config.js'),
      import('../../../shared/clock.js'),
      import('../../../daemon/daemon.js'),
    ])
    const log = await daemonLogger()
    // Fault injection for the crash tests: SIGKILL inside the Nth apply transaction, before its COMMIT.
    const killAt = Number(process.env.JIL_SYNC_TEST_KILL_BEFORE_COMMIT ?? 0)
    let commits = 0
    const beforeCommit = killAt > 0 ? () => void (++commits === killAt && process.kill(process.pid, 'SIGKILL')) : undefined
    const runner = await runNodeSync({stateDir: resolveStateDir(flags['state-dir']), clock: systemClock, log, ...(beforeCommit ? {beforeCommit} : {}), statusEveryMs: Number(process.env.JIL_SYNC_STATUS_EVERY_MS ?? 0) || undefined})
    const ready: NodeSyncRunReady = {node_id: runner.nodeId, pid: process.pid}
    if (this.jsonEnabled()) process.stdout.write(JSON.stringify(ready) + '\n')
    else this.progress(`Node ${ready.node_id}: sync running (pid ${ready.pid}); Ctrl-C stops it`)
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', () => resolve())
      process.once('SIGINT', () => resolve())
    })
    await runner.stop()
    log.flush()
  }
}
