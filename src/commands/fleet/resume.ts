import {JilCommand, hqFlags} from '../../base-command.js'
import {changeRunMode, nodeArg, type FleetRunModeResult} from './stop.js'

export default class FleetResume extends JilCommand {
  static override summary = "Resume a paused node: /healthz passes again."
  static override description = "Sets the node's run mode back to running in its desired state and sends it a refresh so it acts now."
  static override examples = ['<%= config.bin %> fleet resume CH-ZUG-01']
  static override args = nodeArg
  static override flags = {...hqFlags}

  async run(): Promise<FleetRunModeResult> {
    const {args, flags} = await this.parse(FleetResume)
    return changeRunMode(flags, args.node, 'resume')
  }

  protected override render(r: FleetRunModeResult): void {
    this.progress(r.message)
  }
}
