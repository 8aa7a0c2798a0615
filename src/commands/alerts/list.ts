import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {alertsTable} from '../../cli/alerts.js'
import {ALERT_RULES, ALERT_SEVERITIES, ALERT_STATES, type AlertView} from '../../shared/alerts.js'

export type AlertsListResult = {alerts: AlertView[]}

export default class AlertsList extends JilCommand {
  static override summary = 'List alerts: by default the ones not resolved (open and acked), newest first.'
  static override description =
    'HQ evaluates its rules over the fleet every minute: one alert per rule and subject (a node, or a rollout), resolved by HQ when the condition clears. Rules: ' +
    ALERT_RULES.join(', ') +
    '.'
  static override examples = ['<%= config.bin %> alerts list', '<%= config.bin %> alerts list --severity critical --rule heartbeat-stale --json', '<%= config.bin %> alerts list --state resolved']
  static override flags = {
    ...hqFlags,
    state: Flags.string({description: 'Only alerts in this state (default: open and acked).', options: [...ALERT_STATES]}),
    severity: Flags.string({description: 'Only alerts of this severity.', options: [...ALERT_SEVERITIES]}),
    rule: Flags.string({description: 'Only alerts of this rule.', options: [...ALERT_RULES]}),
    limit: Flags.integer({description: 'At most this many alerts.', min: 1, max: 5000, default: 500}),
  }

  async run(): Promise<AlertsListResult> {
    const {flags} = await this.parse(AlertsList)
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) =>
      client.alerts({
        ...(flags.state ? {state: flags.state as AlertView['state']} : {}),
        ...(flags.severity ? {severity: flags.severity as AlertView['severity']} : {}),
        ...(flags.rule ? {rule: flags.rule as AlertView['rule']} : {}),
        limit: flags.limit,
      }),
    )
  }

  protected override render(r: AlertsListResult): void {
    if (r.alerts.length === 0) {
      this.progress('no alerts')
      return
    }
    this.log(alertsTable(r.alerts))
  }
}
