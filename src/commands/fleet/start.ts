import {JilCommand, hqFlags} from '../../base-command.js'
import {changeRunMode, nodeArg, type FleetRunModeResult} from './stop.js'

export default class FleetStart extends JilCommand {
  static override summary = "Start a stopped node's services again (run mode running)."
  static override description = "Sets the node's run mode back to running in its desired state and sends it a refresh: the node starts its services and passes /healthz once they are up."
  static override examples = ['<%= config.bin %> fleet start CH-ZUG-01']
  static override args = nodeArg
  static override flags = {...hqFlags}

  async run(): Promise<FleetRunModeResult> {
    const {args, flags} = await this.parse(FleetStart)
    return changeRunMode(flags, args.node, 'start')
  }

  protected override render(r: FleetRunModeResult): void {
    this.progress(r.message)
  }
}
