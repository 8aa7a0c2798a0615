import {Flags} from '@oclif/core'

import {JilCommand} from '../../base-command.js'
import {keyValues} from '../../cli/table.js'

export type NodeInitResult = import('../../node/identity.js').NodeInitResult

export default class NodeInit extends JilCommand {
  static override summary = 'Set up this machine as a node: its config (node.env) and its P-256 key.'
  static override description = `Writes <state-dir>/node.env (JIL_NODE_ID, JIL_REGION, JIL_JURISDICTION and, when given, REDPANDA_SEEDS, JIL_HQ_URL, JIL_OPERATOR) and generates the node's ECDSA P-256 key (node.key, 0600), which never leaves the machine. Running it again with the same values changes nothing; other values need --force, which also replaces the key, so a joined node must then join again. The environment variables of the same names are honoured.`
  static override examples = [
    '<%= config.bin %> node init --node-id CH-ZUG-01 --region ch-zug --jurisdiction CH/FINMA --hq https://hq.example.com:8443 --operator "Acme Nodes"',
    'JIL_NODE_ID=CA-TOR-01 JIL_REGION=ca-toronto JIL_JURISDICTION=CA/OSC <%= config.bin %> node init',
  ]

  static override flags = {
    'node-id': Flags.string({description: 'This node\'s id, COUNTRY-SITE-NN in upper case (e.g. CH-ZUG-01).', required: true, env: 'JIL_NODE_ID', helpValue: 'ID'}),
    region: Flags.string({description: 'Where the node runs (e.g. ca-toronto).', required: true, env: 'JIL_REGION', helpValue: 'REGION'}),
    jurisdiction: Flags.string({description: 'The compliance zone, COUNTRY/REGULATOR (e.g. CH/FINMA).', required: true, env: 'JIL_JURISDICTION', helpValue: 'ZONE'}),
    'state-dir': Flags.string({description: 'The node\'s state dir (default /var/lib/jil as root, else $XDG_STATE_HOME/jil).', env: 'JIL_STATE_DIR', helpValue: 'DIR'}),
    hq: Flags.string({description: 'HQ URL, recorded for jil node join.', env: 'JIL_HQ_URL', helpValue: 'URL'}),
    'redpanda-seeds': Flags.string({description: 'Event bus seed brokers, HOST:PORT[,HOST:PORT…].', env: 'REDPANDA_SEEDS', helpValue: 'SEEDS'}),
    operator: Flags.string({description: 'The organisation running this node, as registered at HQ.', env: 'JIL_OPERATOR', helpValue: 'ORG'}),
    force: Flags.boolean({description: 'Replace an existing node identity (new key; the node must join again).'}),
  }

  async run(): Promise<NodeInitResult> {
    const {flags} = await this.parse(NodeInit)
    const [{initNode}, {resolveStateDir}] = await Promise.all([import('../../node/identity.js'), import('../../node/config.js')])
    return initNode({
      stateDir: resolveStateDir(flags['state-dir']),
      nodeId: flags['node-id'],
      region: flags.region,
      jurisdiction: flags.jurisdiction,
      hqUrl: flags.hq,
      redpandaSeeds: flags['redpanda-seeds'],
      operator: flags.operator,
      force: flags.force,
    })
  }

  protected override render(r: NodeInitResult): void {
    const verb = {created: 'initialised', unchanged: 'already initialised (nothing changed)', replaced: 're-initialised with a new key'}[r.action]
    this.progress(`Node ${r.node_id} ${verb} in ${r.state_dir}`)
    this.log(
      keyValues([
        ['node_id', r.node_id],
        ['region', r.region],
        ['jurisdiction', r.jurisdiction],
        ['hq_url', r.hq_url],
        ['operator', r.operator],
        ['redpanda_seeds', r.redpanda_seeds],
        ['config', r.env_file],
        ['key', r.key_file],
      ]),
    )
    if (r.action !== 'unchanged') this.progress(`Next: jil node join${r.hq_url ? '' : ' --hq URL'} --token TOKEN --ca-fingerprint sha256:HEX`)
  }
}
