import {JilCommand, hqFlags} from '../../../base-command.js'
import {webhooksTable} from '../../../cli/alerts.js'
import type {WebhookView} from '../../../shared/webhooks.js'

export type AlertsWebhookListResult = {webhooks: WebhookView[]}

export default class AlertsWebhookList extends JilCommand {
  static override summary = 'List the webhooks alerts are sent to (secrets show as fingerprints).'
  static override examples = ['<%= config.bin %> alerts webhook list', '<%= config.bin %> alerts webhook list --json']
  static override flags = {...hqFlags}

  async run(): Promise<AlertsWebhookListResult> {
    const {flags} = await this.parse(AlertsWebhookList)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.webhooks())
  }

  protected override render(r: AlertsWebhookListResult): void {
    if (r.webhooks.length === 0) {
      this.progress('no webhooks; add one with jil alerts webhook add URL --secret S')
      return
    }
    this.log(webhooksTable(r.webhooks))
  }
}
