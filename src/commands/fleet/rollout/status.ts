import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {rolloutLines} from '../../../cli/rollouts.js'
import {table} from '../../../cli/table.js'
import type {RolloutView} from '../../../shared/api.js'

export type FleetRolloutStatusResult = {rollouts: RolloutView[]}

export default class FleetRolloutStatus extends JilCommand {
  static override summary = 'Show a rollout (or the open and recent ones), live with --watch.'
  static override examples = ['<%= config.bin %> fleet rollout status', '<%= config.bin %> fleet rollout status ro_… --watch']
  static override args = {rollout: Args.string({description: 'The rollout id (default: the open and recent rollouts).', required: false})}
  static override flags = {
    ...hqFlags,
    watch: Flags.boolean({description: 'Follow the rollout (the only open one when no id is given) until it ends.'}),
  }

  async run(): Promise<FleetRolloutStatusResult> {
    const {args, flags} = await this.parse(FleetRolloutStatus)
    const [{resolveRolloutId, followRollout, liveBlock}, {withHq}] = await Promise.all([import('../../../cli/rollouts.js'), import('../../../cli/hq-session.js')])
    return withHq(flags, async ({client}) => {
      if (flags.watch) {
        const id = await resolveRolloutId(client, args.rollout)
        const draw = liveBlock(process.stderr)
        const stop = new AbortController()
        const onInt = () => stop.abort()
        process.once('SIGINT', onInt)
        try {
          return {rollouts: [await followRollout(client, id, (v) => draw(rolloutLines(v)), {signal: stop.signal})]}
        } finally {
          process.off('SIGINT', onInt)
        }
      }
      if (args.rollout !== undefined) return {rollouts: [await client.rollout(await resolveRolloutId(client, args.rollout))]}
      return client.rollouts({limit: 20})
    })
  }

  protected override render(r: FleetRolloutStatusResult): void {
    if (r.rollouts.length === 1) {
      this.log(rolloutLines(r.rollouts[0]!).join('\n'))
      return
    }
    if (r.rollouts.length === 0) {
      this.progress('no rollouts yet (start one with jil fleet upgrade)')
      return
    }
    this.log(
      table(
        r.rollouts.map((x) => ({id: x.id, state: x.state, target: x.target.zone ?? x.target.node, image: `${x.image} ${x.version}`, progress: `${x.counts.done ?? 0}/${x.nodes.length}`, created: x.created_at})),
        [
          {key: 'id', header: 'rollout'},
          {key: 'state', header: 'state'},
          {key: 'target', header: 'target'},
          {key: 'image', header: 'image'},
          {key: 'progress', header: 'done'},
          {key: 'created', header: 'created'},
        ],
      ),
    )
  }
}
