import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {parseZoneFlag} from '../../cli/rollouts.js'
import {heartbeatAge, versionsCell} from '../../cli/stack.js'
import {table} from '../../cli/table.js'
import type {FleetNode} from '../../shared/api.js'
import {NODE_STATUSES} from '../../shared/fleet.js'

export type FleetNodesResult = {nodes: FleetNode[]}

export default class FleetNodes extends JilCommand {
  static override summary = 'List the fleet\'s nodes with their status and last heartbeat.'
  static override description = 'Status is derived at HQ: revoked; pending (never joined); paused or stopped (run mode); offline (no heartbeat for 3 minutes); degraded (a critical service not running or unhealthy); else active.'
  static override examples = ['<%= config.bin %> fleet nodes', '<%= config.bin %> fleet nodes --jurisdiction CH/FINMA --status offline --json']
  static override flags = {
    ...hqFlags,
    jurisdiction: Flags.string({description: 'Only nodes of this zone (CH/FINMA).', helpValue: 'ZONE'}),
    status: Flags.string({description: 'Only nodes with this status.', options: [...NODE_STATUSES]}),
  }

  async run(): Promise<FleetNodesResult> {
    const {flags} = await this.parse(FleetNodes)
    const zone = flags.jurisdiction === undefined ? undefined : parseZoneFlag(flags.jurisdiction)
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.fleetNodes({...(zone ? {zone} : {}), ...(flags.status ? {status: flags.status} : {})}))
  }

  protected override render(r: FleetNodesResult): void {
    if (r.nodes.length === 0) {
      this.progress('no nodes')
      return
    }
    this.log(
      table(
        r.nodes.map((n) => ({...n, versions: versionsCell(n), heartbeat: heartbeatAge(n.heartbeat_age_s)})),
        [
          {key: 'id', header: 'id'},
          {key: 'zone', header: 'zone'},
          {key: 'status', header: 'status'},
          {key: 'track', header: 'track'},
          {key: 'versions', header: 'versions'},
          {key: 'heartbeat', header: 'heartbeat'},
        ],
      ),
    )
  }
}
