import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../../base-command.js'
import {keyValues} from '../../../cli/table.js'

export type HqStackSetResult = import('../../../shared/stack.js').StackRecord

export default class HqStackSet extends JilCommand {
  static override summary = 'Set the stack spec of a track: the services its nodes run (versioned, signed by HQ).'
  static override description = `FILE is JSON: {"services": [{"name", "image", "critical", and optionally "command", "env", "ports", "mounts", "health", "user", "network", "grace_s", "stop_timeout_s"}]}. The file is checked before anything is sent. Each set makes the next version of the track's spec; nodes pick it up with their next desired state. Versions come from the track: on devnet the newest signed image, on testnet and mainnet the pinned one (jil hq stack pin).`
  static override examples = ['<%= config.bin %> hq stack set --track mainnet stack.json']
  static override args = {file: Args.string({description: 'The stack spec (JSON).', required: true})}
  static override flags = {...hqFlags, track: Flags.string({description: 'The track.', options: ['devnet', 'testnet', 'mainnet'], required: true})}

  async run(): Promise<HqStackSetResult> {
    const {args, flags} = await this.parse(HqStackSet)
    const [{readStackSpecFile}, {withHq}] = await Promise.all([import('../../../cli/stack.js'), import('../../../cli/hq-session.js')])
    const spec = await readStackSpecFile(args.file)
    return withHq(flags, ({client}) => client.setStack(flags.track, spec))
  }

  protected override render(r: HqStackSetResult): void {
    this.progress(`Set the ${r.track} stack to version ${r.version}`)
    this.log(keyValues([['track', r.track], ['version', r.version], ['services', r.spec.services.map((s) => s.name)], ['signed by', r.key_id], ['created', r.created_at]]))
  }
}
