import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {parseWebhookUrl} from '../../../cli/alerts.js'
import {usageError} from '../../../shared/errors.js'
import {WEBHOOK_FORMATS, WEBHOOK_SECRET_MIN, type WebhookFormat, type WebhookView} from '../../../shared/webhooks.js'

export type AlertsWebhookAddResult = WebhookView

export default class AlertsWebhookAdd extends JilCommand {
  static override summary = 'Send alert notifications to a URL, signed with a shared secret.'
  static override description = `Every opening and resolution of an alert (not while silenced) is POSTed to the URL with X-JIL-Timestamp and X-JIL-Signature: sha256=<hex HMAC-SHA256 of timestamp + "." + body> under the secret. Deliveries are stored first and retried 3 times (network errors, 5xx, 429) with exponential backoff; then they fail and show in jil alerts webhook deliveries. Formats: generic (jil's JSON), slack (an incoming-webhook URL), pagerduty (the Events API v2 URL, https://events.pagerduty.com/v2/enqueue, with --routing-key: the service's integration key; dedup_key is the alert's fingerprint, so a resolution closes the incident). HQ keeps the secret to sign with; it is never shown again (list shows its fingerprint). Recorded in the audit ledger.`
  static override examples = [
    '<%= config.bin %> alerts webhook add https://ops.example.com/jil --secret "$(openssl rand -hex 32)"',
    '<%= config.bin %> alerts webhook add https://hooks.slack.com/services/T…/B…/… --format slack --secret "$(openssl rand -hex 32)"',
    '<%= config.bin %> alerts webhook add https://events.pagerduty.com/v2/enqueue --format pagerduty --routing-key R0UT1NGKEY --secret "$(openssl rand -hex 32)"',
  ]
  static override args = {url: Args.string({description: 'Where to POST: an http:// or https:// URL.', required: true})}
  static override flags = {
    ...hqFlags,
    secret: Flags.string({description: `The shared secret the receiver verifies signatures with (at least ${WEBHOOK_SECRET_MIN} characters). Prefer the env var to keep it out of shell history.`, required: true, env: 'JIL_WEBHOOK_SECRET', helpValue: 'SECRET'}),
    format: Flags.string({description: 'The body format.', options: [...WEBHOOK_FORMATS], default: 'generic'}),
    'routing-key': Flags.string({description: "PagerDuty's integration key (--format pagerduty only).", env: 'JIL_WEBHOOK_ROUTING_KEY', helpValue: 'KEY'}),
  }

  async run(): Promise<AlertsWebhookAddResult> {
    const {args, flags} = await this.parse(AlertsWebhookAdd)
    const url = parseWebhookUrl(args.url)
    const format = flags.format as WebhookFormat
    if (flags.secret.length < WEBHOOK_SECRET_MIN) throw usageError('WEBHOOK_SECRET_REQUIRED', `--secret is shorter than ${WEBHOOK_SECRET_MIN} characters`, 'e.g. --secret "$(openssl rand -hex 32)"')
    if (format === 'pagerduty' && !flags['routing-key']) throw usageError('WEBHOOK_ROUTING_KEY_REQUIRED', '--format pagerduty needs --routing-key', "the Events API v2 integration key of the PagerDuty service")
    if (format !== 'pagerduty' && flags['routing-key']) throw usageError('WEBHOOK_ROUTING_KEY_UNEXPECTED', `--routing-key is for --format pagerduty, not ${format}`, 'drop --routing-key')
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.addWebhook({url, secret: flags.secret, format, ...(flags['routing-key'] ? {routing_key: flags['routing-key']} : {})}))
  }

  protected override render(r: AlertsWebhookAddResult): void {
    this.progress(`added webhook ${r.id} (${r.format}) → ${r.url}, secret ${r.secret_fingerprint}; try it: jil alerts webhook test ${r.id}`)
  }
}
