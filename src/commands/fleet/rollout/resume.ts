import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import type {RolloutView} from '../../../shared/api.js'

export type FleetRolloutResumeResult = RolloutView

export default class FleetRolloutResume extends JilCommand {
  static override summary = 'Resume a paused rollout (also past its canary).'
  static override examples = ['<%= config.bin %> fleet rollout resume', '<%= config.bin %> fleet rollout resume ro_…']
  static override args = {rollout: Args.string({description: 'The rollout id (default: the only open one).', required: false})}
  static override flags = {...hqFlags}

  async run(): Promise<FleetRolloutResumeResult> {
    const {args, flags} = await this.parse(FleetRolloutResume)
    const [{resolveRolloutId}, {withHq}] = await Promise.all([import('../../../cli/rollouts.js'), import('../../../cli/hq-session.js')])
    return withHq(flags, async ({client}) => client.rolloutAction(await resolveRolloutId(client, args.rollout), 'resume'))
  }

  protected override render(r: FleetRolloutResumeResult): void {
    this.progress(`rollout ${r.id}: ${r.state}${r.reason ? ` (${r.reason})` : ''}`)
  }
}
