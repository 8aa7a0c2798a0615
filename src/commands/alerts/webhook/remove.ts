import {Args} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {parseWebhookId} from '../../../cli/alerts.js'
import type {WebhookView} from '../../../shared/webhooks.js'

export type AlertsWebhookRemoveResult = WebhookView

export default class AlertsWebhookRemove extends JilCommand {
  static override summary = 'Stop sending alerts to a webhook: its secret is wiped, its pending deliveries fail.'
  static override examples = ['<%= config.bin %> alerts webhook remove wh_…']
  static override args = {id: Args.string({description: 'The webhook id (jil alerts webhook list).', required: true})}
  static override flags = {...hqFlags}

  async run(): Promise<AlertsWebhookRemoveResult> {
    const {args, flags} = await this.parse(AlertsWebhookRemove)
    const id = parseWebhookId(args.id)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.removeWebhook(id))
  }

  protected override render(r: AlertsWebhookRemoveResult): void {
    this.progress(`removed webhook ${r.id} (${r.url})`)
  }
}
