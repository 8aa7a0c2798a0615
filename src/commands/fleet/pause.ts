import {JilCommand, hqFlags} from '../../base-command.js'
import {changeRunMode, nodeArg, type FleetRunModeResult} from './stop.js'

export default class FleetPause extends JilCommand {
  static override summary = "Pause a node: /healthz fails so traffic drains; its services keep running."
  static override description = "Sets the node's run mode to paused in its desired state (kept across a reboot) and sends it a refresh so it acts now. Undo with jil fleet resume."
  static override examples = ['<%= config.bin %> fleet pause CH-ZUG-01']
  static override args = nodeArg
  static override flags = {...hqFlags}

  async run(): Promise<FleetRunModeResult> {
    const {args, flags} = await this.parse(FleetPause)
    return changeRunMode(flags, args.node, 'pause')
  }

  protected override render(r: FleetRunModeResult): void {
    this.progress(r.message)
  }
}
