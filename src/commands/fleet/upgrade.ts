import {Args, Flags} from '@oclif/core'

import {JilCommand, hqFlags} from '../../base-command.js'
import type {RolloutPlan, RolloutView} from '../../shared/api.js'
import {usageError} from '../../shared/errors.js'
import {parseDuration} from '../../node/settings.js'

export type FleetUpgradeResult = RolloutView | RolloutPlan

export default class FleetUpgrade extends JilCommand {
  static override summary = 'Roll a signed image out to one node or a zone, one node at a time, health-gated.'
  static override description =
    "Starts a rollout at HQ: each node's desired state is pinned to IMAGE@DIGEST in turn (at most --max-parallel at once) and a node counts as done when its heartbeat shows the new digest running and healthy for --min-healthy. A node that fails or passes --health-timeout halts the rollout; with --auto-revert every touched node goes back to what it ran (your key signs those rollbacks now). --canary N pauses after N nodes until jil fleet rollout resume. Devnet nodes are left out: they follow the newest devnet manifest."
  static override examples = [
    '<%= config.bin %> fleet upgrade --jurisdiction CH/FINMA --image settlement-api@sha256:… --auto-revert --canary 1',
    '<%= config.bin %> fleet upgrade CH-ZUG-01 --image settlement-api@sha256:… --wait',
    '<%= config.bin %> fleet upgrade --jurisdiction SG/MAS --image settlement-api@sha256:… --dry-run --json',
  ]
  static override args = {node: Args.string({description: 'One node (else --jurisdiction).', required: false})}
  static override flags = {
    ...hqFlags,
    jurisdiction: Flags.string({description: 'Every testnet and mainnet node of this zone (CH/FINMA).', helpValue: 'ZONE'}),
    image: Flags.string({description: 'The signed image: NAME@sha256:… (its manifest must be on the nodes\' track).', required: true, helpValue: 'IMAGE@DIGEST'}),
    track: Flags.string({description: 'Only the zone\'s nodes on this track.', options: ['testnet', 'mainnet']}),
    'max-parallel': Flags.integer({description: 'Nodes upgrading at once.', default: 1, min: 1}),
    'min-healthy': Flags.string({description: 'How long a node must stay healthy on the new version.', default: '30s', helpValue: 'DURATION'}),
    'health-timeout': Flags.string({description: 'How long a node may take to get there.', default: '5m', helpValue: 'DURATION'}),
    'auto-revert': Flags.boolean({description: 'On a failure, return every touched node to its previous version.'}),
    canary: Flags.integer({description: 'Pause after this many nodes are done (resume with jil fleet rollout resume).', default: 0, min: 0}),
    'dry-run': Flags.boolean({description: 'Show which nodes would move, from what, and change nothing.'}),
    wait: Flags.boolean({description: 'Follow the rollout until it ends (exit 1 unless it succeeds).'}),
  }

  async run(): Promise<FleetUpgradeResult> {
    const {args, flags} = await this.parse(FleetUpgrade)
    const {parseNodeId, parseZoneFlag, startUpgrade, isPlan, followRollout, rolloutLines, liveBlock} = await import('../../cli/rollouts.js')
    if ((args.node === undefined) === (flags.jurisdiction === undefined)) {
      throw usageError('TARGET_REQUIRED', args.node === undefined ? 'say which nodes: a node id or --jurisdiction ZONE' : 'give a node id or --jurisdiction, not both', 'e.g. jil fleet upgrade --jurisdiction CH/FINMA --image NAME@sha256:…')
    }
    if (!/^[^@\s]+@sha256:[0-9a-f]{64}$/.test(flags.image)) throw usageError('IMAGE_INVALID', `--image ${JSON.stringify(flags.image)} is not IMAGE@sha256:DIGEST`, 'jil hq images lists the signed images and their digests')
    const target = args.node !== undefined ? {node: parseNodeId(args.node)} : {zone: parseZoneFlag(flags.jurisdiction!)}
    const minHealthy = parseDuration(flags['min-healthy'], '--min-healthy', 0)
    const timeout = parseDuration(flags['health-timeout'], '--health-timeout', 1000)
    const {withHq} = await import('../../cli/hq-session.js')
    const result = await withHq(flags, async ({client, bundle}) => {
      const r = await startUpgrade(client, bundle, target, {
        image: flags.image,
        ...(flags.track ? {track: flags.track as 'testnet' | 'mainnet'} : {}),
        max_parallel: flags['max-parallel'],
        min_healthy_s: Math.round(minHealthy / 1000),
        health_timeout_s: Math.max(1, Math.round(timeout / 1000)),
        auto_revert: flags['auto-revert'],
        canary: flags.canary,
        dry_run: flags['dry-run'],
      })
      if (isPlan(r) || !flags.wait) return r
      this.progress(`rollout ${r.id} started; following it (Ctrl-C stops following, not the rollout)`)
      const draw = liveBlock(process.stderr)
      const stop = new AbortController()
      const onInt = () => stop.abort()
      process.once('SIGINT', onInt)
      try {
        return await followRollout(client, r.id, (v) => draw(rolloutLines(v)), {signal: stop.signal})
      } finally {
        process.off('SIGINT', onInt)
      }
    })
    if (!isPlan(result) && flags.wait && result.state !== 'succeeded') {
      if (this.jsonEnabled()) this.logJson(result)
      else this.render(result)
      this.exit(1)
    }
    return result
  }

  protected override render(r: FleetUpgradeResult): void {
    if (!('id' in r)) {
      this.log(`${r.image} ${r.version} (${r.digest}) would move ${r.nodes.length} node(s):`)
      for (const n of r.nodes) this.log(`  ${n.node_id} (${n.track}): ${n.services.map((s) => `${s.service} ${s.from?.version ?? 'none'} → ${r.version}`).join(', ')}`)
      for (const s of r.skipped) this.log(`  ${s.node_id}: left out (${s.reason})`)
      return
    }
    if (this.argv.includes('--wait')) {
      this.log(`${r.id} ${r.state}${r.reason ? `: ${r.reason}` : ''}`)
      return
    }
    this.progress(`rollout ${r.id} started: ${r.nodes.length} node(s); follow it with jil fleet rollout status ${r.id} --watch`)
    this.log(r.id)
  }
}
