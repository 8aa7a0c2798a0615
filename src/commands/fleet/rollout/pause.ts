import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import type {RolloutView} from '../../../shared/api.js'

export type FleetRolloutPauseResult = RolloutView

export default class FleetRolloutPause extends JilCommand {
  static override summary = 'Pause a rollout: nodes in flight finish, no new node starts.'
  static override examples = ['<%= config.bin %> fleet rollout pause', '<%= config.bin %> fleet rollout pause ro_…']
  static override args = {rollout: Args.string({description: 'The rollout id (default: the only open one).', required: false})}
  static override flags = {...hqFlags}

  async run(): Promise<FleetRolloutPauseResult> {
    const {args, flags} = await this.parse(FleetRolloutPause)
    const [{resolveRolloutId}, {withHq}] = await Promise.all([import('../../../cli/rollouts.js'), import('../../../cli/hq-session.js')])
    return withHq(flags, async ({client}) => client.rolloutAction(await resolveRolloutId(client, args.rollout), 'pause'))
  }

  protected override render(r: FleetRolloutPauseResult): void {
    this.progress(`rollout ${r.id}: ${r.state}${r.reason ? ` (${r.reason})` : ''}`)
  }
}
