import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {FeedLoop, type Feed} from '../../src/tui/hooks/feed.js'
import {broadcastResults} from '../../src/tui/model.js'
import {describeError, hqSource, type FleetSource} from '../../src/tui/source.js'
import {startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {connectTestNode, testHeartbeat, type ConnectedNode} from '../helpers/node.js'
import {until} from '../helpers/wait.js'

const NODE = 'CH-TUI-01'

/**
 * `jil top`'s data source over a real HQ (mutual TLS, the live stream): the feed loop the hook runs,
 * the actions through the CLI's routes and helpers, and HQ's 403 for a role without the permission.
 */
describe('jil top against a real HQ', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let users: Awaited<ReturnType<typeof testUsers>>
  let node: ConnectedNode
  let ops: FleetSource
  let feed: Feed | undefined
  let loop: FeedLoop

  beforeAll(async () => {
    t = await startTestHq({events: {flushMs: 50}})
    tmp = await tempDir('jil-tui-')
    users = await testUsers(t, tmp.dir, [
      ['olivia', 'ops-lead'],
      ['vic', 'viewer'],
    ])
    node = await connectTestNode({url: t.hq.url, caFingerprint: t.init.ca_fingerprint}, t.admin, {nodeId: NODE, zone: 'CH/FINMA', track: 'mainnet'})
    await node.client.heartbeat(testHeartbeat(NODE, new Date(), {services: [{name: 'api', critical: true, state: 'running', health: 'healthy', digest: null, version: 'v95.3'}], certValidMs: 30 * 86_400_000}))
    ops = hqSource(users.olivia!.client, users.olivia!.bundle)
    loop = new FeedLoop(ops, (f) => (feed = f), {throttleMs: 20})
    void loop.run()
  }, 120_000)

  afterAll(async () => {
    loop?.stop()
    await node?.client.close()
    await node?.node.cleanup()
    for (const u of Object.values(users ?? {})) await u.client.close()
    await t?.stop()
    await tmp?.cleanup()
  })

  it('loads the snapshot after ready and follows a pause over the stream', async () => {
    await until('the live feed', async () => (feed?.phase === 'live' && feed.fleet.nodes.has(NODE) ? true : undefined), 20_000)
    expect(feed!.fleet.nodes.get(NODE)).toMatchObject({zone: 'CH/FINMA', status: 'active', run_mode: 'running'})
    expect(ops.info).toEqual({hqUrl: t.hq.url, user: 'olivia', role: 'ops-lead'})

    expect(await ops.runMode(NODE, 'pause')).toContain('paused')
    await until('the paused node on the stream', async () => (feed!.fleet.nodes.get(NODE)?.status === 'paused' ? true : undefined), 20_000)
    expect(feed!.fleet.nodes.get(NODE)!.run_mode).toBe('paused')
    expect(await ops.runMode(NODE, 'resume')).toContain('running')

    const d = await ops.nodeDetail(NODE)
    expect(d.node).toMatchObject({id: NODE, state: {desired: {run_mode: 'running'}}})
    expect(d.stack).toMatchObject({track: 'mainnet'})
  })

  it('answers a viewer\'s action with HQ\'s 403 and the permission it lacks', async () => {
    const viewer = hqSource(users.vic!.client, users.vic!.bundle)
    const err = await viewer.runMode(NODE, 'stop').catch((e: unknown) => e)
    expect(describeError(err)).toMatchObject({code: 'FORBIDDEN', status: 403, message: expect.stringContaining('nodes:operate')})
    expect(describeError(await viewer.broadcast('refresh', {all: true}).catch((e: unknown) => e))).toMatchObject({code: 'FORBIDDEN', status: 403})
    expect(describeError(await viewer.revoke(NODE, 'test').catch((e: unknown) => e))).toMatchObject({code: 'FORBIDDEN', status: 403, message: expect.stringContaining('nodes:revoke')})
    // A viewer still reads the whole fleet.
    expect((await viewer.snapshot()).nodes.map((n) => n.id)).toContain(NODE)
  })

  it('broadcasts, and the node\'s answer arrives as a commands event', async () => {
    const sent = await ops.broadcast('refresh', {node: NODE})
    expect(sent.rows).toEqual([expect.objectContaining({node_id: NODE, command_id: expect.stringMatching(/^cmd_/), status: 'pending'})])
    // The node picks it up and answers, as its daemon would.
    const {commands} = await node.client.nodeCommands(0)
    const mine = commands.find((c) => c.id === sent.rows[0]!.command_id)!
    await node.client.commandResult(mine.id, {ok: true, summary: 'refreshed: 1 service up to date'})
    await until('the answer on the stream', async () => (broadcastResults(sent.rows, feed!.fleet.commands)[0]!.status === 'succeeded' ? true : undefined), 20_000)
    expect(broadcastResults(sent.rows, feed!.fleet.commands)).toEqual([{node_id: NODE, command_id: mine.id, status: 'succeeded', summary: 'refreshed: 1 service up to date'}])
  })
})
