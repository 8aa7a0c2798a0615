import {JilCommand, hqFlags} from '../../base-command.js'
import {heartbeatAge, versionsCell} from '../../cli/stack.js'
import {keyValues, table} from '../../cli/table.js'
import {shortDigest} from '../../cli/releases.js'
import type {FleetNodeDetail} from '../../shared/api.js'
import {usageError} from '../../shared/errors.js'
import {nodeArg} from './stop.js'
import {NODE_ID_PATTERN} from '../../shared/ids.js'
import {syncSummary} from '../../tui/model.js'

export type FleetNodeResult = FleetNodeDetail

export default class FleetNode extends JilCommand {
  static override summary = 'Show one node: status, run mode, versions, last heartbeat, its agents\' last reports, desired vs applied.'
  static override description =
    "Desired is what HQ holds for the node now (run mode, config version, the sequence of the desired state it last issued); applied is what the node's last heartbeat says it applied. They differ until the node has acted on a change. The node's config documents (jil fleet config push) follow, with the config version it applied."
  static override examples = ['<%= config.bin %> fleet node CH-ZUG-01', '<%= config.bin %> fleet node CH-ZUG-01 --json']
  static override args = nodeArg
  static override flags = {...hqFlags}

  async run(): Promise<FleetNodeResult> {
    const {args, flags} = await this.parse(FleetNode)
    const id = args.node.toUpperCase()
    if (!NODE_ID_PATTERN.test(id)) throw usageError('NODE_ID_INVALID', `${JSON.stringify(args.node)} is not a node id`, 'node ids look like CH-ZUG-01 (see jil fleet nodes)')
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.fleetNode(id))
  }

  protected override render(n: FleetNodeResult): void {
    const s = n.state
    const applied = s.applied ? `${s.applied.run_mode}, sequence ${s.applied.sequence}, config v${s.applied.config_version}` : '-'
    const desired = `${s.desired.run_mode}, sequence ${s.desired.sequence ?? '-'}, config v${s.desired.config_version}`
    this.log(
      keyValues([
        ['node', n.id],
        ['zone', n.zone],
        ['operator', n.operator],
        ['track', n.track],
        ['status', n.status],
        ['run mode', n.run_mode],
        ['versions', versionsCell(n)],
        ['last heartbeat', n.last_heartbeat_at ? `${n.last_heartbeat_at} (${heartbeatAge(n.heartbeat_age_s)})` : 'never'],
        ['certificate until', n.cert_not_after],
        ['desired', desired],
        ['applied', applied],
        ['in sync', s.in_sync === null ? '-' : s.in_sync ? 'yes' : 'no'],
        ...(n.sync ? [['event sync', syncSummary(n.sync)] as [string, string]] : []),
      ]),
    )
    // What runs, as the last heartbeat says, and whether HQ holds a signed manifest for each digest on the node's track.
    if (n.services && n.services.length > 0) {
      this.log('')
      this.log(
        table(
          n.services.map((x) => ({...x, critical: x.critical ? 'yes' : 'no', digest: x.digest ? shortDigest(x.digest) : null, signature: x.digest === null ? null : x.signed ? 'signed' : x.deprecated ? 'deprecated' : 'UNSIGNED'})),
          [
            {key: 'name', header: 'service'},
            {key: 'state', header: 'state'},
            {key: 'health', header: 'health'},
            {key: 'critical', header: 'critical'},
            {key: 'version', header: 'version'},
            {key: 'digest', header: 'digest'},
            {key: 'signature', header: 'signature'},
          ],
        ),
      )
    }
    // Desired config (what HQ carries in the node's desired state) against what the node says it wrote.
    const c = n.config
    if (c.desired.length > 0 || c.desired_version > 0) {
      this.log('')
      this.log(`config: desired v${c.desired_version}, applied ${c.applied_version === null ? '-' : `v${c.applied_version}`}${c.applied_version === c.desired_version ? '' : ' (not yet applied)'}`)
      this.log(
        table(
          c.desired.map((d) => ({...d, sha256: d.sha256.slice(0, 16)})),
          [
            {key: 'name', header: 'document'},
            {key: 'scope', header: 'scope'},
            {key: 'version', header: 'version'},
            {key: 'seq', header: 'seq'},
            {key: 'sha256', header: 'sha256'},
          ],
        ),
      )
    }
    const reports = Object.values(n.reports)
    if (reports.length === 0) return
    this.log('')
    this.log(
      table(
        reports.map((r) => ({agent: r.agent, ok: r.ok ? 'ok' : 'FAILED', at: r.finished_at, findings: r.findings.length, summary: r.summary})),
        [
          {key: 'agent', header: 'agent'},
          {key: 'ok', header: 'ok'},
          {key: 'at', header: 'at'},
          {key: 'findings', header: 'findings'},
          {key: 'summary', header: 'summary'},
        ],
      ),
    )
  }
}
