import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'
import type {ConfigPushResult} from '../../../shared/api.js'

export type FleetConfigPushResult = ConfigPushResult

export default class FleetConfigPush extends JilCommand {
  static override summary = 'Push a config document (JSON) to every node of a zone or to one node.'
  static override description =
    "Stores the next version of the document at HQ. Each node whose effective config changes gets it in its signed desired state, with a refresh so it acts now, and writes it to <state-dir>/config/<name>.json (the file's sha256 is the document's). A node's own document shadows its zone's of the same name. Pushing content equal to the newest version changes nothing. jil fleet node ID shows desired vs applied config."
  static override examples = [
    '<%= config.bin %> fleet config push --jurisdiction CH/FINMA fees.json',
    '<%= config.bin %> fleet config push --node CH-ZUG-01 fees-override.json --name fees',
    '<%= config.bin %> fleet config push --jurisdiction SG/MAS params.json --json',
  ]
  static override args = {file: Args.string({description: 'The document: a JSON file (at most 256 KiB).', required: true})}
  static override flags = {
    ...hqFlags,
    jurisdiction: Flags.string({description: 'Every node of this zone (CH/FINMA).', helpValue: 'ZONE'}),
    node: Flags.string({description: 'One node.', helpValue: 'ID'}),
    name: Flags.string({description: "The document's name (default: the file's base name, lower-cased: Fees.json → fees).", helpValue: 'NAME'}),
  }

  async run(): Promise<FleetConfigPushResult> {
    const {args, flags} = await this.parse(FleetConfigPush)
    const [{parseConfigTarget, readConfigFile}, {withHq}] = await Promise.all([import('../../../cli/config.js'), import('../../../cli/hq-session.js')])
    const target = parseConfigTarget(flags, 'jil fleet config push --jurisdiction CH/FINMA fees.json')
    const doc = await readConfigFile(args.file, flags.name)
    return withHq(flags, ({client}) => client.configPush(target, {name: doc.name, content: doc.content}))
  }

  protected override render(r: FleetConfigPushResult): void {
    this.progress(r.message)
    this.log(
      keyValues([
        ['name', r.name],
        [r.scope, r.target],
        ['version', r.version],
        ['changed', r.changed ? 'yes' : 'no (same content as the newest version)'],
        ['sha256', r.sha256],
        ['bytes', r.bytes],
        ['nodes', r.nodes.length ? r.nodes.map((n) => `${n.node_id} (config v${n.config_version}${n.command_id ? '' : ', not joined'})`) : '-'],
        ...(r.shadowed.length ? ([['shadowed by node documents', r.shadowed]] as [string, unknown][]) : []),
      ]),
    )
  }
}
