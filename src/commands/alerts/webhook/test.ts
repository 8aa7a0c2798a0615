import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {awaitFirstAttempt, parseWebhookId} from '../../../cli/alerts.js'
import type {DeliveryView} from '../../../shared/webhooks.js'

export type AlertsWebhookTestResult = DeliveryView

export default class AlertsWebhookTest extends JilCommand {
  static override summary = 'Send a test event to a webhook and show how its first attempt went.'
  static override description = 'The test is a delivery like any other (signed, retried, listed in jil alerts webhook deliveries); its event type is alert.test.'
  static override examples = ['<%= config.bin %> alerts webhook test wh_…', '<%= config.bin %> alerts webhook test wh_… --wait 0 --json']
  static override args = {id: Args.string({description: 'The webhook id (jil alerts webhook list).', required: true})}
  static override flags = {
    ...hqFlags,
    wait: Flags.integer({description: 'Seconds to wait for the first attempt (0: only enqueue).', min: 0, max: 120, default: 15}),
  }

  async run(): Promise<AlertsWebhookTestResult> {
    const {args, flags} = await this.parse(AlertsWebhookTest)
    const id = parseWebhookId(args.id)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, async ({client}) => awaitFirstAttempt((d) => client.webhookDelivery(d), await client.testWebhook(id), flags.wait * 1000))
  }

  protected override render(r: AlertsWebhookTestResult): void {
    const last = r.last_error ?? (r.last_status === null ? '' : `HTTP ${r.last_status}`)
    if (r.state === 'delivered') this.progress(`delivered test ${r.id} to ${r.webhook_id} (HTTP ${r.last_status})`)
    else if (r.attempts === 0) this.progress(`test ${r.id} queued, not attempted yet; see jil alerts webhook deliveries --webhook ${r.webhook_id}`)
    else if (r.state === 'pending') this.progress(`test ${r.id}: attempt ${r.attempts} failed (${last}); retrying at ${r.next_attempt_at}`)
    else this.progress(`test ${r.id} failed (${last}); not retried`)
  }
}
