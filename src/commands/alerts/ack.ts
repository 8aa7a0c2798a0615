import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {parseAlertId} from '../../cli/alerts.js'
import type {AlertView} from '../../shared/alerts.js'

export type AlertsAckResult = AlertView

export default class AlertsAck extends JilCommand {
  static override summary = 'Acknowledge an alert: you are on it. It stays acked until HQ resolves it.'
  static override description = 'The ack is recorded in the audit ledger. Acking an acked alert changes nothing; a resolved one cannot be acked.'
  static override examples = ['<%= config.bin %> alerts ack al_…']
  static override args = {id: Args.string({description: 'The alert id (jil alerts list).', required: true})}
  static override flags = {...hqFlags}

  async run(): Promise<AlertsAckResult> {
    const {args, flags} = await this.parse(AlertsAck)
    const id = parseAlertId(args.id)
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.ackAlert(id))
  }

  protected override render(r: AlertsAckResult): void {
    this.progress(`alert ${r.id} (${r.rule} ${r.subject}) acked by ${r.acked_by} at ${r.acked_at}`)
  }
}
