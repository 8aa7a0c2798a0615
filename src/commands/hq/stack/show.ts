import {Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {stackRows} from '../../../cli/stack.js'
import {table} from '../../../cli/table.js'
import {JilError} from '../../../shared/errors.js'
import {verifyStackRecord} from '../../../shared/stack.js'

export type HqStackShowResult = import('../../../shared/hq-client.js').StackView

export default class HqStackShow extends JilCommand {
  static override summary = 'Show the stack of a track and the version each service runs there.'
  static override description = 'The stack record is checked against HQ\'s image-signing keys before it is shown. Versions: on devnet the newest signed devnet image; on testnet and mainnet the pinned one (- when none yet: nodes do not run that service).'
  static override examples = ['<%= config.bin %> hq stack show --track mainnet', '<%= config.bin %> hq stack show --track devnet --json']
  static override flags = {...hqFlags, track: Flags.string({description: 'The track.', options: ['devnet', 'testnet', 'mainnet'], required: true})}

  async run(): Promise<HqStackShowResult> {
    const {flags} = await this.parse(HqStackShow)
    const {withHq} = await import('../../../cli/hq-session.js')
    return withHq(flags, async ({client}) => {
      const view = await client.stack(flags.track)
      if (view.stack && !verifyStackRecord(view.stack, (await client.signingKeys()).keys)) {
        throw new JilError('STACK_SIGNATURE_INVALID', `the ${flags.track} stack record (v${view.stack.version}) does not verify with HQ's signing keys`, {
          hint: 'the stored record was altered: set the stack again (jil hq stack set) and check the audit log (jil audit log)',
        })
      }
      return view
    })
  }

  protected override render(v: HqStackShowResult): void {
    if (!v.stack) {
      this.progress(`${v.track} has no stack spec yet (jil hq stack set --track ${v.track} FILE)`)
      return
    }
    this.progress(`${v.track} stack v${v.stack.version}, set by ${v.stack.created_by} at ${v.stack.created_at}, signed by ${v.stack.key_id}`)
    this.log(
      table(stackRows(v), [
        {key: 'service', header: 'service'},
        {key: 'image', header: 'image'},
        {key: 'version', header: 'version'},
        {key: 'digest', header: 'digest'},
        {key: 'critical', header: 'critical'},
        {key: 'pinned_by', header: 'pinned by'},
      ]),
    )
  }
}
