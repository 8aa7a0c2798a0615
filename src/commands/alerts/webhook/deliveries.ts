import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {deliveriesTable, parseWebhookId} from '../../../cli/alerts.js'
import {DELIVERY_STATES, type DeliveryState, type DeliveryView} from '../../../shared/webhooks.js'

export type AlertsWebhookDeliveriesResult = {deliveries: DeliveryView[]}

export default class AlertsWebhookDeliveries extends JilCommand {
  static override summary = 'List webhook deliveries, newest first: pending, delivered, and failed ones (dead letters).'
  static override examples = ['<%= config.bin %> alerts webhook deliveries --state failed', '<%= config.bin %> alerts webhook deliveries --webhook wh_… --json']
  static override flags = {
    ...hqFlags,
    webhook: Flags.string({description: 'Only this webhook’s deliveries.', helpValue: 'ID'}),
    state: Flags.string({description: 'Only deliveries in this state.', options: [...DELIVERY_STATES]}),
    limit: Flags.integer({description: 'At most this many.', min: 1, max: 5000, default: 100}),
  }

  async run(): Promise<AlertsWebhookDeliveriesResult> {
    const {flags} = await this.parse(AlertsWebhookDeliveries)
    const webhook = flags.webhook === undefined ? undefined : parseWebhookId(flags.webhook)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) =>
      client.webhookDeliveries({...(webhook ? {webhook} : {}), ...(flags.state ? {state: flags.state as DeliveryState} : {}), limit: flags.limit}),
    )
  }

  protected override render(r: AlertsWebhookDeliveriesResult): void {
    if (r.deliveries.length === 0) {
      this.progress('no deliveries')
      return
    }
    this.log(deliveriesTable(r.deliveries))
  }
}
