import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {table} from '../../../cli/table.js'
import type {ConfigListing} from '../../../shared/api.js'

export type FleetConfigShowResult = ConfigListing

export default class FleetConfigShow extends JilCommand {
  static override summary = "Show a zone's current config documents, or the effective config of one node."
  static override description =
    "For a node: for each name, its own newest document if it has one, else its zone's newest — what its desired state carries. --json includes each document's content."
  static override examples = ['<%= config.bin %> fleet config show --jurisdiction CH/FINMA', '<%= config.bin %> fleet config show --node CH-ZUG-01 --json']
  static override flags = {
    ...hqFlags,
    jurisdiction: Flags.string({description: 'The zone (CH/FINMA).', helpValue: 'ZONE'}),
    node: Flags.string({description: 'One node.', helpValue: 'ID'}),
  }

  async run(): Promise<FleetConfigShowResult> {
    const {flags} = await this.parse(FleetConfigShow)
    const [{parseConfigTarget}, {withHq}] = await Promise.all([import('../../../cli/config.js'), import('../../../cli/hq-session.js')])
    const target = parseConfigTarget(flags, 'jil fleet config show --jurisdiction CH/FINMA')
    return withHq(flags, ({client}) => client.configList(target))
  }

  protected override render(r: FleetConfigShowResult): void {
    this.progress(`${r.target}: config version ${r.config_version}, ${r.docs.length} document${r.docs.length === 1 ? '' : 's'}`)
    if (r.docs.length === 0) return
    this.log(
      table(
        r.docs.map((d) => ({...d, sha256: d.sha256.slice(0, 16)})),
        [
          {key: 'name', header: 'name'},
          {key: 'scope', header: 'scope'},
          {key: 'version', header: 'version'},
          {key: 'seq', header: 'seq'},
          {key: 'sha256', header: 'sha256'},
          {key: 'created_by', header: 'by'},
          {key: 'created_at', header: 'at'},
        ],
      ),
    )
  }
}
