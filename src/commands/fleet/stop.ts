import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import type {RunModeAction, RunModeChange} from '../../shared/api.js'
import {usageError} from '../../shared/errors.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'

export type FleetRunModeResult = RunModeChange

/** What stop, start, pause and resume share: check the id, ask HQ to change the node's run mode. */
export async function changeRunMode(flags: {hq?: string | undefined; user?: string | undefined}, id: string, action: RunModeAction): Promise<RunModeChange> {
  const nodeId = id.toUpperCase()
  if (!NODE_ID_PATTERN.test(nodeId)) throw usageError('NODE_ID_INVALID', `${JSON.stringify(id)} is not a node id`, 'node ids look like CH-ZUG-01 (see jil fleet nodes)')
  const {withHq} = await import('../../cli/hq-session.js')
  return withHq(flags, ({client}) => client.runModeAction(nodeId, action))
}

export const nodeArg = {node: Args.string({description: 'Node id, e.g. CH-ZUG-01.', required: true})}

export default class FleetStop extends JilCommand {
  static override summary = 'Stop a node: /healthz fails, the load balancer drains it, then its services stop.'
  static override description =
    "Sets the node's run mode to stopped in its desired state (so it stays stopped across a reboot) and sends it a refresh so it acts now. The node fails /healthz first and stops its services after its drain period (JIL_DRAIN). Undo with jil fleet start."
  static override examples = ['<%= config.bin %> fleet stop CH-ZUG-01']
  static override args = nodeArg
  static override flags = {...hqFlags}

  async run(): Promise<FleetRunModeResult> {
    const {args, flags} = await this.parse(FleetStop)
    return changeRunMode(flags, args.node, 'stop')
  }

  protected override render(r: FleetRunModeResult): void {
    this.progress(r.message)
  }
}
