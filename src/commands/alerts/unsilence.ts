import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {parseSilenceId} from '../../cli/alerts.js'
import type {SilenceView} from '../../shared/alerts.js'

export type AlertsUnsilenceResult = SilenceView

export default class AlertsUnsilence extends JilCommand {
  static override summary = 'End a silence now: alerts it held back that are still true are notified at the next evaluation.'
  static override examples = ['<%= config.bin %> alerts unsilence si_…']
  static override args = {id: Args.string({description: 'The silence id (jil alerts silences).', required: true})}
  static override flags = {...hqFlags}

  async run(): Promise<AlertsUnsilenceResult> {
    const {args, flags} = await this.parse(AlertsUnsilence)
    const id = parseSilenceId(args.id)
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.unsilenceAlerts(id))
  }

  protected override render(r: AlertsUnsilenceResult): void {
    this.progress(`ended the silence of ${r.rule} on ${r.node_id ?? 'every node'} (${r.id})`)
  }
}
