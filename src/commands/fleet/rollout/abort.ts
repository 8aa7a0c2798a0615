import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import type {RolloutView} from '../../../shared/api.js'

export type FleetRolloutAbortResult = RolloutView

export default class FleetRolloutAbort extends JilCommand {
  static override summary = 'End a rollout where it is: nodes keep what they run (jil fleet rollback undoes one).'
  static override examples = ['<%= config.bin %> fleet rollout abort', '<%= config.bin %> fleet rollout abort ro_…']
  static override args = {rollout: Args.string({description: 'The rollout id (default: the only open one).', required: false})}
  static override flags = {...hqFlags}

  async run(): Promise<FleetRolloutAbortResult> {
    const {args, flags} = await this.parse(FleetRolloutAbort)
    const [{resolveRolloutId}, {withHq}] = await Promise.all([import('../../../cli/rollouts.js'), import('../../../cli/hq-session.js')])
    return withHq(flags, async ({client}) => client.rolloutAction(await resolveRolloutId(client, args.rollout), 'abort'))
  }

  protected override render(r: FleetRolloutAbortResult): void {
    this.progress(`rollout ${r.id}: ${r.state}${r.reason ? ` (${r.reason})` : ''}`)
  }
}
