import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {BROADCAST_COMMANDS, broadcast, broadcastTarget, type FleetBroadcastResult} from '../../cli/broadcast.js'
import {table} from '../../cli/table.js'
import type {NodeCommandName} from '../../shared/api.js'
import {parseDuration} from '../../node/settings.js'

export type {FleetBroadcastResult}

export default class FleetBroadcast extends JilCommand {
  static override summary = 'Send a command to every node, a zone or one node, and show each node\'s answer.'
  static override description =
    'refresh = fetch the desired state and reconcile now; cycle = rolling restart of the services; pause/resume = fail/pass /healthz (kept in the desired state); reboot = the host command the node has configured (JIL_REBOOT_COMMAND; else reported only). Exits 1 when a node failed or did not answer within --wait.'
  static override examples = ['<%= config.bin %> fleet broadcast refresh --all', '<%= config.bin %> fleet broadcast pause --jurisdiction CH/FINMA --wait 2m', '<%= config.bin %> fleet broadcast cycle --node CH-ZUG-01 --json']
  static override args = {command: Args.string({description: 'The command.', required: true, options: [...BROADCAST_COMMANDS]})}
  static override flags = {
    ...hqFlags,
    all: Flags.boolean({description: 'Every active node.'}),
    jurisdiction: Flags.string({description: 'The active nodes of this zone (CH/FINMA).', helpValue: 'ZONE'}),
    node: Flags.string({description: 'One node.', helpValue: 'ID'}),
    wait: Flags.string({description: 'How long to wait for the answers (0s: send only).', default: '60s', helpValue: 'DURATION'}),
  }

  async run(): Promise<FleetBroadcastResult> {
    const {args, flags} = await this.parse(FleetBroadcast)
    const target = broadcastTarget(flags)
    const waitMs = parseDuration(flags.wait, '--wait', 0)
    const {withHq} = await import('../../cli/hq-session.js')
    const result = await withHq(flags, ({client}) =>
      broadcast(client, args.command as NodeCommandName, target, {
        waitMs,
        onResult: (r) => this.progress(`${r.node_id}: ${r.status}${r.summary ? `: ${r.summary}` : ''}`),
      }),
    )
    if (!result.ok) {
      // The per-node answers are the result even when some failed: print them, then exit 1.
      if (this.jsonEnabled()) this.logJson(result)
      else this.render(result)
      this.exit(1)
    }
    return result
  }

  protected override render(r: FleetBroadcastResult): void {
    this.log(
      table(
        r.results.map((x) => ({...x, error: x.error?.code ?? null})),
        [
          {key: 'node_id', header: 'node'},
          {key: 'status', header: 'status'},
          {key: 'error', header: 'error'},
          {key: 'summary', header: 'summary'},
        ],
      ),
    )
  }
}
