import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type AuditProofResult = import('../../cli/audit.js').AuditProofResult

export default class AuditProof extends JilCommand {
  static override summary = 'Prove that one audit entry is in the signed ledger, and check the proof here.'
  static override description = 'Fetches the RFC 6962 inclusion proof of entry SEQ against HQ\'s latest signed checkpoint and verifies it locally: the checkpoint signature against the pinned key, the entry hash against its content, the proof against the signed root.'
  static override examples = ['<%= config.bin %> audit proof 42', '<%= config.bin %> audit proof 42 --json']

  static override args = {seq: Args.integer({description: 'The entry\'s sequence number.', required: true, min: 1})}

  static override flags = {
    ...hqFlags,
    'checkpoint-key': Flags.string({description: 'HQ\'s checkpoint public key (PEM) (default: the one pinned in your bundle).', helpValue: 'FILE'}),
  }

  async run(): Promise<AuditProofResult> {
    const {args, flags} = await this.parse(AuditProof)
    const [audit, {openHqSession}] = await Promise.all([import('../../cli/audit.js'), import('../../cli/hq-session.js')])
    const pinned = await audit.pinnedCheckpointKey(flags['checkpoint-key'], flags.user)
    const {client} = await openHqSession(flags)
    try {
      return await audit.proveEntry(client, args.seq, pinned)
    } finally {
      await client.close()
    }
  }

  protected override render(r: AuditProofResult): void {
    this.progress(`Entry ${r.seq} is in the ledger HQ signed at size ${r.tree_size} (verified here)`)
    this.log(
      keyValues([
        ['seq', r.seq],
        ['action', r.entry.action],
        ['subject', r.entry.subject],
        ['entry_hash', r.entry.hash],
        ['tree_size', r.tree_size],
        ['root_hash', r.checkpoint.root_hash],
        ['checkpoint_time', r.checkpoint.time],
        ['proof', r.proof.length === 0 ? '(none: a one-entry tree)' : r.proof[0]],
        ...r.proof.slice(1).map((h) => ['', h] as [string, string]),
      ]),
    )
  }
}
