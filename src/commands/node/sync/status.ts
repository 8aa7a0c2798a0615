import {Flags} from '@oclif/core'

import {JilCommand} from '../../../base-command.js'
import {keyValues, table} from '../../../cli/table.js'

export type NodeSyncStatusResult = import('../../../sync/node.js').NodeSyncStatusResult

export default class NodeSyncStatus extends JilCommand {
  static override summary = 'Show event sync on this node: lag per topic, last sequence per source, outbox backlog, gaps.'
  static override description = `Reads the node database (JIL_NODE_DATABASE_URL) and the bus (JIL_SYNC_TRANSPORT: RedPanda at REDPANDA_SEEDS, or the postgres-log at JIL_SYNC_LOG_URL), whether or not sync runs now. caught_up is true when every partition of every synced topic is consumed to its end. A gap is a range of a source's sequence numbers not seen below its last one: a source's events travel on several partitions, so gaps open and close while the node catches up; one still open when caught up is an event lost upstream.`
  static override examples = ['<%= config.bin %> node sync status', '<%= config.bin %> node sync status --json']

  static override flags = {
    'state-dir': Flags.string({description: "The node's state dir (default /var/lib/jil as root, else $XDG_STATE_HOME/jil).", env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
  }

  async run(): Promise<NodeSyncStatusResult> {
    const {flags} = await this.parse(NodeSyncStatus)
    const [{nodeSyncStatus}, {resolveStateDir}, {systemClock}] = await Promise.all([import('../../../sync/node.js'), import('../../../node/config.js'), import('../../../shared/clock.js')])
    return nodeSyncStatus({stateDir: resolveStateDir(flags['state-dir']), clock: systemClock})
  }

  protected override render(r: NodeSyncStatusResult): void {
    this.log(
      keyValues([
        ['node_id', r.node_id],
        ['transport', r.transport],
        ['caught_up', r.caught_up ? 'yes' : `no (lag ${r.lag_s}s)`],
        ['outbox_backlog', String(r.outbox_backlog)],
        ['gaps', r.gaps.length ? r.gaps.map((g) => `${g.source_id} ${g.from_seq}-${g.to_seq}`).join(', ') : 'none'],
      ]),
    )
    this.log('')
    this.log(table(r.topics, [{key: 'topic', header: 'TOPIC'}, {key: 'partitions', header: 'PARTITIONS'}, {key: 'end_offset', header: 'END'}, {key: 'position', header: 'POSITION'}, {key: 'lag', header: 'LAG'}]))
    if (r.sources.length) {
      this.log('')
      this.log(table(r.sources, [{key: 'source_id', header: 'SOURCE'}, {key: 'last_seq', header: 'LAST SEQ'}, {key: 'events', header: 'EVENTS'}, {key: 'last_ts', header: 'LAST CHANGE'}]))
    }
  }
}
