import {readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {hqPath} from '../../src/hq/datadir.js'
import {readAppliedConfig} from '../../src/node/config-files.js'
import {runAgent} from '../../src/node/agents/run.js'
import {applyDesiredState} from '../../src/node/agents/update.js'
import {readLastReport} from '../../src/node/state.js'
import {loadTrust} from '../../src/node/trust.js'
import type {ConfigPushResult} from '../../src/shared/api.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import {configSha256, MAX_CONFIG_BYTES} from '../../src/shared/config-docs.js'
import {readSecret} from '../../src/shared/files.js'
import type {HqClient} from '../../src/shared/hq-client.js'
import {fileSigner} from '../../src/shared/signing.js'
import {signDocument, type DesiredState} from '../../src/shared/stack.js'
import {startTestHq, tempDir, testUsers} from '../helpers/hq.js'
import {agentContexts, joinTestNode, OPERATOR, testAgentContext, type TestNode} from '../helpers/node.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'

const CH1 = 'CH-CFG-01'
const CH2 = 'CH-CFG-02'
const SG1 = 'SG-CFG-01'
const PENDING = 'CH-CFG-03'
const REVOKED = 'CH-CFG-04'
/** The update and health agents list the node's containers: they need an engine (the stack itself stays empty). */
const DOCKER = process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST
if (!DOCKER && process.env.CI) throw new Error('JIL_TEST_DOCKER_HOST is not set: run `eval "$(scripts/test-services.sh env)"` first')

const FEES = {schedule: 'CH-2026', tiers: [{up_to: 10_000, bps: 12}, {up_to: null, bps: 8}], vat: 0.081}
const LIMITS = {daily_chf: 250_000, kyc_level: 2}

type Storage = {name: string; databaseUrl?: () => Promise<{url: string; drop: () => Promise<void>}>}
const storages: Storage[] = [{name: 'pglite'}, ...(hasPg ? [{name: 'pg', databaseUrl: freshPgDatabase}] : [])]

/** Config push end to end: HQ stores, signs and delivers; the node's agents write, report and stay in sync. */
describe.each(storages)('config push on $name', (storage) => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let pg: {url: string; drop: () => Promise<void>} | undefined
  const users: Record<string, {bundle: UserBundle; client: HqClient}> = {}
  const nodes: Record<string, TestNode> = {}
  const ctx = agentContexts(() => nodes[CH1]!)
  const as = (who: string) => users[who]!.client
  /** A node's own view: its signed desired state, as its update agent fetches it. */
  const desiredOf = async (id: string): Promise<DesiredState> => {
    const c = await testAgentContext(nodes[id]!)
    try {
      return await (await c.hq()).desiredState()
    } finally {
      await c.close()
    }
  }
  const q = <R extends Record<string, unknown>>(sql: string, params: unknown[] = []) => t.hq.db.query<R>(sql, params).then((r) => r.rows)
  // Pending entries move to the log as the sequencer runs: look in both.
  const audits = () => q<{action: string; subject: string; details: Record<string, unknown>}>("SELECT action, subject, details FROM audit_pending WHERE action = 'config.push' UNION ALL SELECT action, subject, details FROM audit_log WHERE action = 'config.push'")
  const auditOf = async (seq: number) => (await audits()).filter((a) => a.details.seq === seq)
  const docCount = async () => Number((await q<{n: number}>('SELECT count(*)::int AS n FROM config_docs'))[0]!.n)
  const openRefreshes = async (id: string) => (await as('vera').fleetCommands({node: id})).commands.filter((c) => c.command === 'refresh' && (c.status === 'pending' || c.status === 'delivered'))

  beforeAll(async () => {
    pg = storage.databaseUrl ? await storage.databaseUrl() : undefined
    t = await startTestHq(pg ? {databaseUrl: pg.url} : {})
    tmp = await tempDir()
    Object.assign(users, await testUsers(t, tmp.dir, [['olga', 'ops-lead'], ['vera', 'viewer'], ['sam', 'security-lead']] as const))
    for (const [id, zone] of [[CH1, 'CH/FINMA'], [CH2, 'CH/FINMA'], [SG1, 'SG/MAS'], [REVOKED, 'CH/FINMA']] as const) nodes[id] = await joinTestNode(t.hq, t.admin, {nodeId: id, zone})
    await as('sam').request('DELETE', `/v1/fleet/nodes/${REVOKED}`, {reason: 'decommissioned'})
    await as('olga').request('POST', '/v1/fleet/nodes', {node_id: PENDING, zone: 'CH/FINMA', operator: OPERATOR, track: 'devnet'})
  })
  afterEach(() => ctx.closeAll())
  afterAll(async () => {
    for (const u of Object.values(users)) await u.client.close()
    for (const n of Object.values(nodes)) await n.cleanup()
    await t?.stop()
    await pg?.drop()
    await tmp?.cleanup()
  })

  it('a zone push reaches the zone\'s nodes in their signed desired state, raises their config version, sends a refresh and is audited', async () => {
    const before = await desiredOf(CH1)
    expect(before).toMatchObject({config_version: 0, config: []})
    const r = await as('olga').configPush({zone: 'CH/FINMA'}, {name: 'fees', content: FEES})
    expect(r).toMatchObject({scope: 'zone', target: 'CH/FINMA', name: 'fees', version: 1, changed: true, sha256: configSha256(FEES), created_by: 'olga', shadowed: []})
    // The pending node is kept current (it joins with the right version) but gets no command; the revoked one is left out.
    expect(r.nodes).toEqual([
      {node_id: CH1, config_version: r.seq, command_id: expect.stringMatching(/^cmd_/)},
      {node_id: CH2, config_version: r.seq, command_id: expect.stringMatching(/^cmd_/)},
      {node_id: PENDING, config_version: r.seq, command_id: null},
    ])
    expect(await openRefreshes(CH1)).toHaveLength(1)

    const after = await desiredOf(CH1)
    expect(after.sequence).toBeGreaterThan(before.sequence)
    expect(after.config_version).toBe(r.seq)
    expect(after.config).toEqual([{name: 'fees', scope: 'zone', version: 1, seq: r.seq, sha256: configSha256(FEES), content: FEES}])
    // SG is another zone: untouched.
    expect(await desiredOf(SG1)).toMatchObject({config_version: 0, config: []})

    const [a, ...more] = await auditOf(r.seq)
    expect(more).toEqual([])
    expect(a!.subject).toBe('zone/CH/FINMA')
    expect(a!.details).toMatchObject({scope: 'zone', target: 'CH/FINMA', name: 'fees', version: 1, seq: r.seq, sha256: configSha256(FEES), nodes: [CH1, CH2, PENDING], refreshed: 2})

    // The same content again: no new version, no command, no audit entry.
    const docs = await docCount()
    const entries = (await audits()).length
    const same = await as('olga').configPush({zone: 'CH_FINMA'}, {name: 'fees', content: JSON.parse(JSON.stringify({vat: FEES.vat, tiers: FEES.tiers, schedule: FEES.schedule}))})
    expect(same).toMatchObject({changed: false, version: 1, seq: r.seq, nodes: []})
    expect(await docCount()).toBe(docs)
    expect(await audits()).toHaveLength(entries)
    expect(await openRefreshes(CH1)).toHaveLength(1)
  })

  it('a node document shadows the zone\'s of the same name; a later zone version does not change that node', async () => {
    const own = {...FEES, schedule: 'CH-ZUG-special'}
    const mine = await as('admin').configPush({node: CH1}, {name: 'fees', content: own})
    expect(mine).toMatchObject({scope: 'node', target: CH1, version: 1, changed: true, nodes: [{node_id: CH1, config_version: mine.seq}]})
    expect(await auditOf(mine.seq)).toMatchObject([{subject: CH1, details: {scope: 'node', target: CH1, name: 'fees', nodes: [CH1], refreshed: 1}}])
    expect((await desiredOf(CH1)).config).toEqual([{name: 'fees', scope: 'node', version: 1, seq: mine.seq, sha256: configSha256(own), content: own}])

    const ch1Before = await desiredOf(CH1)
    const v2 = await as('olga').configPush({zone: 'CH/FINMA'}, {name: 'fees', content: {...FEES, vat: 0.077}})
    expect(v2).toMatchObject({version: 2, changed: true, shadowed: [CH1]})
    expect(v2.nodes.map((n) => n.node_id)).toEqual([CH2, PENDING])
    const ch1After = await desiredOf(CH1)
    expect(ch1After.config_version).toBe(mine.seq)
    expect(ch1After.sequence).toBe(ch1Before.sequence) // its content did not change
    expect((await desiredOf(CH2)).config).toMatchObject([{name: 'fees', scope: 'zone', version: 2, seq: v2.seq}])

    // A second zone document reaches CH1 too: its config is the union, one per name, sorted.
    const limits = await as('olga').configPush({zone: 'CH/FINMA'}, {name: 'limits', content: LIMITS})
    expect(limits.nodes.map((n) => n.node_id)).toEqual([CH1, CH2, PENDING])
    const d = await desiredOf(CH1)
    expect(d.config!.map((c) => [c.name, c.scope])).toEqual([['fees', 'node'], ['limits', 'zone']])
    expect(d.config_version).toBe(limits.seq)

    const listed = await as('vera').configList({node: CH1})
    expect(listed).toMatchObject({scope: 'node', target: CH1, config_version: limits.seq, docs: [{name: 'fees', scope: 'node', content: own, created_by: 'admin'}, {name: 'limits', scope: 'zone'}]})
    const zone = await as('vera').configList({zone: 'CH/FINMA'})
    expect(zone.docs.map((x) => [x.name, x.version])).toEqual([['fees', 2], ['limits', 1]])
  })

  it('a node admitted after a push starts on its zone\'s config', async () => {
    const id = 'CH-CFG-05'
    const late = await joinTestNode(t.hq, t.admin, {nodeId: id, zone: 'CH/FINMA'})
    nodes[id] = late
    const d = await desiredOf(id)
    expect(d.config!.map((c) => [c.name, c.scope, c.version])).toEqual([['fees', 'zone', 2], ['limits', 'zone', 1]])
    expect(d.config_version).toBe(Math.max(...d.config!.map((c) => c.seq)))
  })

  it('bad input is refused with a clear problem and stores nothing, sends nothing, audits nothing', async () => {
    const docs = await docCount()
    const entries = (await audits()).length
    const commands = (await as('vera').fleetCommands({limit: 1000})).commands.length
    const refused = async (p: Promise<unknown>, o: Record<string, unknown>) => expect(p).rejects.toMatchObject(o)
    await refused(as('olga').configPush({node: 'CH-NOPE-01'}, {name: 'fees', content: {}}), {status: 404, code: 'NODE_UNKNOWN'})
    await refused(as('olga').configPush({zone: 'XX/NOPE'}, {name: 'fees', content: {}}), {status: 404, code: 'ZONE_UNKNOWN'})
    await refused(as('olga').configPush({node: PENDING}, {name: 'fees', content: {}}), {status: 409, code: 'NODE_NOT_ACTIVE'})
    await refused(as('olga').configPush({node: REVOKED}, {name: 'fees', content: {}}), {status: 409, code: 'NODE_NOT_ACTIVE'})
    for (const name of ['../passwd', 'Fees', '.applied', 'a..b', 'x'.repeat(65), 'fees/ch']) {
      await refused(as('olga').configPush({zone: 'CH/FINMA'}, {name, content: {}}), {status: 400, code: 'CONFIG_NAME_INVALID', details: {field: 'name'}})
    }
    await refused(as('olga').configPush({zone: 'CH/FINMA'}, {name: 'big', content: {blob: 'x'.repeat(MAX_CONFIG_BYTES)}}), {status: 413, code: 'CONFIG_TOO_LARGE'})
    await refused(as('olga').configPush({zone: 'CH/FINMA'}, {name: 'nul', content: {a: 'b\u0000c'}}), {status: 400, code: 'CONFIG_INVALID'})
    await refused(as('olga').request('POST', '/v1/fleet/jurisdictions/CH_FINMA/config', {name: 'fees'}), {status: 400, code: 'INVALID_BODY'})
    await refused(as('olga').request('POST', '/v1/fleet/jurisdictions/CH_FINMA/config', {name: 'fees', content: {}, scope: 'node'}), {status: 400, code: 'INVALID_BODY', details: {field: 'scope'}})
    await refused(as('olga').request('POST', '/v1/fleet/jurisdictions/CH_FINMA/config', {name: 7, content: {}}), {status: 400, code: 'INVALID_BODY', details: {field: 'name'}})
    await refused(as('olga').request('POST', '/v1/fleet/jurisdictions/CH-FINMA/config', {name: 'fees', content: {}}), {status: 400})
    // Only nodes:operate pushes: a viewer and a security-lead get 403, a node too.
    await refused(as('vera').configPush({zone: 'CH/FINMA'}, {name: 'fees', content: {}}), {status: 403, code: 'FORBIDDEN'})
    await refused(as('sam').configPush({node: CH1}, {name: 'fees', content: {}}), {status: 403, code: 'FORBIDDEN'})
    const node = await testAgentContext(nodes[CH1]!)
    try {
      await refused((await node.hq()).configPush({node: CH1}, {name: 'fees', content: {}}), {status: 403, code: 'FORBIDDEN'})
    } finally {
      await node.close()
    }
    await refused(as('vera').configList({zone: 'XX/NOPE'}), {status: 404, code: 'ZONE_UNKNOWN'})
    await refused(as('vera').request('GET', '/v1/fleet/config'), {status: 400, code: 'TARGET_REQUIRED'})

    expect(await docCount()).toBe(docs)
    expect(await audits()).toHaveLength(entries)
    expect((await as('vera').fleetCommands({limit: 1000})).commands).toHaveLength(commands)
  })

  describe.runIf(DOCKER)('on the node', () => {
    it('the refresh makes the node write its config; the next heartbeat reports it and the node is in sync', async () => {
      const c = await ctx.context()
      // Cron mode: the health run sends its heartbeat, then runs the pending refresh (an update run).
      const first = await runAgent('health', c)
      expect(first.ok, first.summary).toBe(true)
      expect(first.summary).toMatch(/ran refresh/)
      // Three pushes reached CH1, so three refreshes ran: the first wrote both documents, the others found them written.
      const refreshes = (await as('vera').fleetCommands({node: CH1})).commands.filter((x) => x.command === 'refresh')
      expect(refreshes.every((x) => x.status === 'succeeded')).toBe(true)
      expect(refreshes.map((x) => x.result?.summary).filter((x) => /config v\d+ applied \(2 written, 0 removed\)/.test(x ?? ''))).toHaveLength(1)
      expect((await readLastReport(nodes[CH1]!.stateDir, 'update'))?.details).toMatchObject({config: {ok: true, written: [], unchanged: ['fees', 'limits']}})

      const dir = join(nodes[CH1]!.stateDir, 'config')
      expect((await stat(dir)).mode & 0o777).toBe(0o750)
      expect((await readdir(dir)).sort()).toEqual(['.applied.json', 'fees.json', 'limits.json'])
      const desired = await desiredOf(CH1)
      for (const d of desired.config!) {
        const file = join(dir, `${d.name}.json`)
        const text = await readFile(file, 'utf8')
        expect(JSON.parse(text)).toEqual(d.content)
        expect(configSha256(JSON.parse(text))).toBe(d.sha256)
        expect((await stat(file)).mode & 0o777).toBe(0o644)
      }
      expect(await readAppliedConfig(nodes[CH1]!.stateDir)).toMatchObject({config_version: desired.config_version})

      // The first heartbeat went out before the refresh ran: HQ sees the config not yet applied.
      let shown = await as('vera').fleetNode(CH1)
      expect(shown.config).toMatchObject({desired_version: desired.config_version, applied_version: 0, desired: [{name: 'fees', scope: 'node'}, {name: 'limits', scope: 'zone'}]})
      expect(shown.state.in_sync).toBe(false)
      const second = await runAgent('health', c)
      expect(second.ok, second.summary).toBe(true)
      shown = await as('vera').fleetNode(CH1)
      expect(shown.state).toMatchObject({desired: {config_version: desired.config_version}, applied: {config_version: desired.config_version, sequence: desired.sequence}, in_sync: true})
      expect(shown.config.applied_version).toBe(desired.config_version)
      expect(shown.config.desired[0]).not.toHaveProperty('content')

      // A push the node has not applied yet shows as out of sync.
      await as('olga').configPush({node: CH1}, {name: 'limits', content: {...LIMITS, daily_chf: 100_000}})
      expect((await as('vera').fleetNode(CH1)).state.in_sync).toBe(false)
      expect((await runAgent('update', c)).summary).toMatch(/config v\d+ applied \(1 written, 0 removed\)/)
      await runAgent('health', c)
      expect((await as('vera').fleetNode(CH1)).state.in_sync).toBe(true)
    })

    it('a document no longer listed is removed, the operator\'s own files are not, and a document with a bad hash changes nothing', async () => {
      const c = await ctx.context()
      const dir = join(nodes[CH1]!.stateDir, 'config')
      await writeFile(join(dir, 'local-tuning.json'), '{"mine": true}\n')
      const signer = await fileSigner(await readSecret(hqPath(t.dataDir, 'signingKey'), 'signing key'))
      const current = await desiredOf(CH1)
      const {key_id: _k, signature: _s, ...unsigned} = current
      const trust = await loadTrust(c, {refresh: true})
      const fees = current.config!.find((d) => d.name === 'fees')!

      // A document HQ signed whose content does not match its sha256: refused whole, nothing written.
      // Signed here with HQ's own key, at HQ's current sequence (an equal sequence is no replay).
      const bad = await signDocument({...unsigned, config: [{...fees, content: {tampered: true}}]}, signer)
      expect(await applyDesiredState(c, bad, trust)).toMatchObject({status: 'refused', code: 'DS_MALFORMED'})
      expect((await readdir(dir)).sort()).toEqual(['.applied.json', 'fees.json', 'limits.json', 'local-tuning.json'])

      const fewer = await signDocument({...unsigned, config_version: fees.seq, config: [fees]}, signer)
      const r = await applyDesiredState(c, fewer, trust)
      expect(r).toMatchObject({status: 'applied', config: {ok: true, config_version: fees.seq, written: [], removed: ['limits'], unchanged: ['fees']}})
      expect((await readdir(dir)).sort()).toEqual(['.applied.json', 'fees.json', 'local-tuning.json'])
      expect(await readFile(join(dir, 'local-tuning.json'), 'utf8')).toBe('{"mine": true}\n')
      expect(await readAppliedConfig(nodes[CH1]!.stateDir)).toEqual({config_version: fees.seq, docs: [{name: 'fees', seq: fees.seq, version: fees.version, sha256: fees.sha256}]})

      // HQ's next document puts limits back.
      await runAgent('update', c)
      expect((await readdir(dir)).sort()).toEqual(['.applied.json', 'fees.json', 'limits.json', 'local-tuning.json'])
    })

    it('config applies while the node is stopped', async () => {
      const c = await ctx.context()
      await as('olga').runModeAction(CH1, 'stop')
      const pushed: ConfigPushResult = await as('olga').configPush({zone: 'CH/FINMA'}, {name: 'holidays', content: ['2026-08-01', '2026-12-25']})
      expect(pushed.nodes.map((n) => n.node_id)).toContain(CH1)
      const r = await runAgent('update', c)
      expect(r.ok, r.summary).toBe(true)
      expect(r.details).toMatchObject({run_mode: 'stopped', config: {ok: true, written: ['holidays']}})
      expect(JSON.parse(await readFile(join(nodes[CH1]!.stateDir, 'config', 'holidays.json'), 'utf8'))).toEqual(['2026-08-01', '2026-12-25'])
      await as('olga').runModeAction(CH1, 'start')
    })
  })
})
