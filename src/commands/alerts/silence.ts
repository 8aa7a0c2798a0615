import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {parseSilenceFor} from '../../cli/alerts.js'
import {ALERT_RULES, type SilenceView} from '../../shared/alerts.js'
import {usageError} from '../../shared/errors.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'

export type AlertsSilenceResult = SilenceView

export default class AlertsSilence extends JilCommand {
  static override summary = "Silence a rule's alerts (on one node, or every node) for a while."
  static override description =
    'Alerts of the rule are still recorded while silenced, but not notified; one still true when the silence expires is notified then. The silence is recorded in the audit ledger; end it early with jil alerts unsilence.'
  static override examples = ['<%= config.bin %> alerts silence --rule disk-critical --node CH-ZUG-01 --for 2h --reason "disk swap tonight"', '<%= config.bin %> alerts silence --rule version-drift --for 30m --reason "mainnet rollout"']
  static override flags = {
    ...hqFlags,
    rule: Flags.string({description: 'The rule to silence.', options: [...ALERT_RULES], required: true}),
    node: Flags.string({description: 'Only on this node (default: every node).', helpValue: 'NODE_ID'}),
    for: Flags.string({description: 'How long: 30m, 2h, 3d (1 minute to 90 days).', required: true, helpValue: 'DURATION'}),
    reason: Flags.string({description: 'Why, for the audit ledger and the next person on call.', required: true, helpValue: 'TEXT'}),
  }

  async run(): Promise<AlertsSilenceResult> {
    const {flags} = await this.parse(AlertsSilence)
    const forS = parseSilenceFor(flags.for)
    const node = flags.node?.toUpperCase()
    if (node !== undefined && !NODE_ID_PATTERN.test(node)) throw usageError('NODE_ID_INVALID', `--node ${JSON.stringify(flags.node)} is not a node id`, 'node ids look like CH-ZUG-01 (see jil fleet nodes)')
    if (flags.reason.trim() === '') throw usageError('REASON_REQUIRED', '--reason is empty', 'say why the alerts are silenced')
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.silenceAlerts({rule: flags.rule, ...(node ? {node_id: node} : {}), for_s: forS, reason: flags.reason}))
  }

  protected override render(r: AlertsSilenceResult): void {
    this.progress(`silenced ${r.rule} on ${r.node_id ?? 'every node'} until ${r.expires_at} (${r.id})`)
  }
}
