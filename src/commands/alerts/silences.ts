import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {silencesTable} from '../../cli/alerts.js'
import type {SilenceView} from '../../shared/alerts.js'

export type AlertsSilencesResult = {silences: SilenceView[]}

export default class AlertsSilences extends JilCommand {
  static override summary = 'List the silences in force (--all: expired ones too).'
  static override examples = ['<%= config.bin %> alerts silences', '<%= config.bin %> alerts silences --all --json']
  static override flags = {
    ...hqFlags,
    all: Flags.boolean({description: 'Include expired silences.'}),
  }

  async run(): Promise<AlertsSilencesResult> {
    const {flags} = await this.parse(AlertsSilences)
    const {withHq} = await import('../../cli/hq-session.js')
    return withHq(flags, ({client}) => client.alertSilences({all: flags.all}))
  }

  protected override render(r: AlertsSilencesResult): void {
    if (r.silences.length === 0) {
      this.progress('no silences')
      return
    }
    this.log(silencesTable(r.silences))
  }
}
