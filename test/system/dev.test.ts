import {spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import {readdir, readFile, readlink} from 'node:fs/promises'
import {join} from 'node:path'

import pg from 'pg'
import {afterAll, describe, expect, it} from 'vitest'

import {BIN, jil, jilOk, jilServe} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'
import {docker, removeContainersOf, testBaseImage} from '../helpers/images.js'
import {PG_URL} from '../helpers/pg.js'
import {until} from '../helpers/wait.js'

/**
 * `jil dev --nodes 5` as a child process, and the tour a newcomer takes through the CLI from another
 * terminal, with the profile and the user bundles jil dev wrote: the fleet in its zones, a new
 * release signed, approved and promoted, rolled out to one zone, a node revoked and locked out, the
 * audit ledger verified; Ctrl-C leaves nothing running; a second start takes the same fleet up again.
 * Sync runs over the test PostgreSQL server (databases jil_dev_*, dropped before and after).
 */

const REGISTRY_BIN = '/usr/bin/docker-registry'
const ZONES: Record<string, string> = {'CH-ZUG-01': 'CH/FINMA', 'AE-ABU-01': 'AE/FSRA', 'SG-SIN-01': 'SG/MAS', 'US-NYC-01': 'US/FINCEN', 'GB-LON-01': 'GB/FCA'}
const NODE_IDS = Object.keys(ZONES)
const DATABASES = ['jil_dev_log', ...NODE_IDS.map((id) => `jil_dev_${id.toLowerCase().replace(/-/g, '_')}`)]

/** The server of the test database, addressed through its maintenance database: jil dev creates its own there. */
function serverUrl(): string {
  const u = new URL(PG_URL!)
  u.pathname = '/postgres'
  return u.toString()
}

async function dropDevDatabases(): Promise<void> {
  const c = new pg.Client({connectionString: PG_URL})
  await c.connect()
  try {
    for (const d of DATABASES) await c.query(`DROP DATABASE IF EXISTS ${d} WITH (FORCE)`)
  } finally {
    await c.end()
  }
}

/** PIDs of the services the no-container runtime started for this data dir (their env names the container, their cwd is under it). */
async function serviceProcesses(dir: string): Promise<number[]> {
  const out: number[] = []
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue
    const env = await readFile(`/proc/${e}/environ`, 'utf8').catch(() => '')
    if (!env.includes('JIL_CONTAINER_ID=')) continue
    const cwd = await readlink(`/proc/${e}/cwd`).catch(() => '')
    if (cwd.startsWith(dir)) out.push(Number(e))
  }
  return out
}

/** PIDs whose command line mentions `marker` (the registry started with the data dir's config). */
async function processesMentioning(marker: string): Promise<number[]> {
  const out: number[] = []
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue
    const cmd = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '')
    if (cmd.split('\0').join(' ').includes(marker)) out.push(Number(e))
  }
  return out
}

async function devContainers(): Promise<string[]> {
  const ids = await Promise.all(NODE_IDS.map((id) => docker('ps', '-aq', '--filter', `label=jil.node=${id}`)))
  return ids.flatMap((s) => s.split('\n').filter(Boolean))
}

type Variant = {name: string; mode: 'on' | 'off'; env: NodeJS.ProcessEnv}

const variants: Variant[] = [{name: 'the no-container runtime', mode: 'off', env: {}}]
if (process.env.JIL_TEST_DOCKER_HOST) variants.push({name: 'the Docker engine', mode: 'on', env: {DOCKER_HOST: process.env.JIL_TEST_DOCKER_HOST, JIL_DOCKER_HOST: ''}})

describe.runIf(PG_URL && existsSync(REGISTRY_BIN))('jil dev: the whole fleet on one machine', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {})
    await dropDevDatabases().catch(() => {})
  })

  it('Ctrl-C during start-up stops after the step in flight: DEV_INTERRUPTED, nothing left running, the data dir free again', async () => {
    await dropDevDatabases()
    const tmp = await tempDir('jil-dev-int-')
    cleanups.push(tmp.cleanup)
    const dir = join(tmp.dir, 'dev')
    const env: NodeJS.ProcessEnv = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_HQ_URL: '', JIL_DATABASE_URL: '', JIL_STATE_DIR: '', JIL_NODE_ID: '', JIL_DEV_DATA_DIR: ''}
    const child = spawn(process.execPath, [BIN, 'dev', '--nodes', '5', '--data-dir', dir, '--docker', 'off', '--listen', '127.0.0.1:0', '--database-url', serverUrl(), '--json'], {env: {...process.env, ...env}, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
    cleanups.push(async () => {
      if (child.exitCode === null) child.kill('SIGKILL')
      for (const pid of await processesMentioning(join(dir, 'registry', 'config.yml'))) process.kill(pid, 'SIGTERM')
    })
    // A progress line of start-up itself (the Ctrl-C handler is installed before start-up begins).
    const started = new Promise<void>((resolve) =>
      child.stderr.on('data', (d) => {
        stderr += d
        if (/creating HQ|adding user/.test(stderr)) resolve()
      }),
    )
    await Promise.race([started, exited])
    child.kill('SIGINT')
    expect(await exited, stderr).toBe(1)
    expect(JSON.parse(stdout)).toMatchObject({error: {code: 'DEV_INTERRUPTED'}})
    expect(stderr).toContain('stopping once the step in flight ends')
    expect(stderr).not.toMatch(/node daemons? running/)
    expect(await serviceProcesses(dir)).toEqual([])
    expect(await processesMentioning(join(dir, 'registry', 'config.yml'))).toEqual([])
    expect(existsSync(join(dir, 'dev.lock'))).toBe(false)
  }, 120_000)

  for (const v of variants) {
    it(`runs the tour on ${v.name}, stops cleanly on SIGINT and reuses its data dir`, async () => {
      await dropDevDatabases()
      if (v.mode === 'on') {
        // The engine is shared: a failed earlier run may have left these nodes' containers.
        for (const id of NODE_IDS) await removeContainersOf(id)
        cleanups.push(async () => {
          for (const id of NODE_IDS) await removeContainersOf(id)
        })
        // As an earlier dev fleet whose data dir is gone would leave it: CH-ZUG-01's "api" claiming v9.9.
        const base = testBaseImage()
        await docker('create', '--network', 'none', '--name', 'jil-ch-zug-01-api', '--label', 'jil.node=CH-ZUG-01', '--label', 'jil.service=api', '--label', 'jil.version=v9.9', `${base.repository}@${base.digest}`, 'sleep', '60')
      }
      const tmp = await tempDir('jil-dev-')
      cleanups.push(tmp.cleanup)
      const dir = join(tmp.dir, 'dev')
      const env: NodeJS.ProcessEnv = {XDG_CONFIG_HOME: join(tmp.dir, 'config'), JIL_USER: '', JIL_HQ_URL: '', JIL_DATABASE_URL: '', JIL_STATE_DIR: '', JIL_NODE_ID: '', JIL_DEV_DATA_DIR: '', ...v.env}
      const user = (name: string) => ['--user', join(dir, 'users', `${name}.bundle.json`)]
      const args = ['dev', '--nodes', '5', '--data-dir', dir, '--docker', v.mode, '--listen', '127.0.0.1:0', '--database-url', serverUrl(), '--json']
      const start = async () => {
        const dev = await jilServe(args, env)
        cleanups.push(async () => {
          // A test that failed midway: stop it in order, then by force; then the registry it started.
          if (dev.child.exitCode === null) {
            dev.child.kill('SIGINT')
            const t = setTimeout(() => dev.child.kill('SIGKILL'), 30_000)
            await dev.exited
            clearTimeout(t)
          }
          for (const pid of await processesMentioning(join(dir, 'registry', 'config.yml'))) process.kill(pid, 'SIGTERM')
        })
        return dev
      }

      const dev = await start()
      expect(dev.ready).toMatchObject({nodes: 5, docker: v.mode, sync: 'postgres-log', data_dir: dir, profile: join(tmp.dir, 'config', 'jil', 'profile.json'), users_dir: join(dir, 'users')})
      expect(dev.ready.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
      expect(dev.ready.registry).toMatch(/^127\.0\.0\.1:\d+$/)

      // From another terminal, with nothing but the profile jil dev wrote: five nodes in their zones, heartbeating v1.0.
      const fleet = await until('five nodes active and running v1.0', async () => {
        const nodes = (await jilOk(['fleet', 'nodes', '--json'], env)).json().nodes as {id: string; zone: string; status: string; versions: Record<string, string>}[]
        return nodes.length === 5 && nodes.every((n) => n.status === 'active' && n.versions.api === 'v1.0' && n.versions.worker === 'v1.0') ? nodes : undefined
      }, 90_000)
      expect(Object.fromEntries(fleet.map((n) => [n.id, n.zone]))).toEqual(ZONES)
      if (v.mode === 'on') expect(dev.stderr()).toContain('removed containers an earlier dev fleet left for CH-ZUG-01')
      const joins = await until('five join entries in the ledger', async () => {
        const entries = (await jilOk(['audit', 'log', '--action', 'node.join', '--json'], env)).json().entries as unknown[]
        return entries.length === 5 ? entries : undefined
      })
      expect(joins).toHaveLength(5)

      // A new release: ci-pipeline signs the v1.1 jil dev left unsigned in its registry; testnet takes
      // one approval, mainnet two distinct ones, one of them a security-lead.
      const signed = (await jilOk(['hq', 'sign', `${dev.ready.registry}/jil/demo:v1.1`, '--version', 'v1.1', '--commit', '0a1b2c3', ...user('ci-pipeline'), '--json'], env)).json()
      expect(signed).toMatchObject({image: 'jil/demo', version: 'v1.1', track: 'devnet'})
      const ref = `jil/demo@${signed.digest}`
      await jilOk(['hq', 'approve', ref, '--track', 'testnet', ...user('ops-lead')], env)
      await jilOk(['hq', 'promote', ref, '--to', 'testnet', ...user('ops-lead')], env)
      await jilOk(['hq', 'approve', ref, '--track', 'mainnet', ...user('ops-lead')], env)
      const early = await jil(['hq', 'promote', ref, '--to', 'mainnet', ...user('ops-lead'), '--json'], env)
      expect(early.code).toBe(1)
      expect(early.json().error.code).toBe('INSUFFICIENT_APPROVALS')
      await jilOk(['hq', 'approve', ref, '--track', 'mainnet', ...user('security-lead')], env)
      const promoted = (await jilOk(['hq', 'promote', ref, '--to', 'mainnet', ...user('security-lead'), '--json'], env)).json()
      expect(promoted).toMatchObject({track: 'mainnet', digest: signed.digest})
      expect(promoted.approvals).toHaveLength(2)

      // Rolled out to one zone: its node reports the new version, the others keep theirs.
      const rollout = (await jilOk(['fleet', 'upgrade', '--jurisdiction', 'CH/FINMA', '--image', ref, '--min-healthy', '1s', '--health-timeout', '2m', '--wait', ...user('ops-lead'), '--json'], env)).json()
      expect(rollout).toMatchObject({state: 'succeeded'})
      expect(rollout.nodes.map((n: {node_id: string; state: string}) => [n.node_id, n.state])).toEqual([['CH-ZUG-01', 'done']])
      const after = (await jilOk(['fleet', 'nodes', '--json'], env)).json().nodes as {id: string; versions: Record<string, string>}[]
      expect(after.find((n) => n.id === 'CH-ZUG-01')!.versions).toEqual({api: 'v1.1', worker: 'v1.1'})
      expect(after.find((n) => n.id === 'SG-SIN-01')!.versions).toEqual({api: 'v1.0', worker: 'v1.0'})
      if (v.mode === 'on') {
        const labelled = await docker('ps', '-q', '--filter', 'label=jil.node=CH-ZUG-01', '--filter', 'label=jil.version=v1.1')
        expect(labelled.split('\n').filter(Boolean)).toHaveLength(2)
      }

      // Event sync: each node's demo rows reached the others over the postgres-log bus.
      const sync = await until('CH-ZUG-01 applied the other nodes\' demo rows', async () => {
        const s = (await jilOk(['node', 'sync', 'status', '--state-dir', join(dir, 'nodes', 'CH-ZUG-01'), '--json'], env)).json()
        return s.caught_up && s.sources.length === 4 && s.sources.every((x: {events: number}) => x.events >= 3) ? s : undefined
      }, 90_000)
      expect(sync.sources.map((s: {source_id: string}) => s.source_id).sort()).toEqual(NODE_IDS.filter((id) => id !== 'CH-ZUG-01').sort())

      // A security-lead revokes a node: its very next request is refused (401 CERT_REVOKED).
      await jilOk(['hq', 'revoke', 'AE-ABU-01', '--reason', 'dev tour', ...user('security-lead'), '--json'], env)
      const status = (await jil(['node', 'status', '--state-dir', join(dir, 'nodes', 'AE-ABU-01'), '--json'], env)).json()
      expect(status.hq).toMatchObject({accepted: false, code: 'CERT_REVOKED'})

      const verified = (await jilOk(['audit', 'verify', '--json'], env)).json()
      expect(verified).toMatchObject({ok: true})

      // Ctrl-C: exit 0, and nothing of the fleet is left running.
      if (v.mode === 'off') expect((await serviceProcesses(dir)).length).toBeGreaterThan(0)
      else expect((await devContainers()).length).toBeGreaterThan(0)
      expect(await processesMentioning(join(dir, 'registry', 'config.yml'))).toHaveLength(1)
      dev.child.kill('SIGINT')
      expect(await dev.exited, dev.stderr()).toBe(0)
      expect(await serviceProcesses(dir)).toEqual([])
      expect(await processesMentioning(join(dir, 'registry', 'config.yml'))).toEqual([])
      if (v.mode === 'on') expect(await devContainers()).toEqual([])

      // Again on the same dir: the same HQ and nodes (no new join), the revoked node not started.
      const again = await start()
      expect(again.ready.ca_fingerprint).toBe(dev.ready.ca_fingerprint)
      expect(again.ready.nodes).toBe(4)
      const restarted = Date.now()
      const back = await until('the four nodes heartbeating again', async () => {
        const nodes = (await jilOk(['fleet', 'nodes', '--json'], env)).json().nodes as {id: string; status: string; last_heartbeat_at: string | null}[]
        const live = nodes.filter((n) => n.status === 'active' && n.last_heartbeat_at !== null && Date.parse(n.last_heartbeat_at) > restarted)
        return live.length === 4 ? nodes : undefined
      }, 90_000)
      expect(back.find((n) => n.id === 'AE-ABU-01')!.status).toBe('revoked')
      expect((await jilOk(['audit', 'log', '--action', 'node.join', '--json'], env)).json().entries).toHaveLength(5)
      expect(again.stderr()).toContain('4 nodes reused with their certificates')
      again.child.kill('SIGINT')
      expect(await again.exited, again.stderr()).toBe(0)
      expect(await serviceProcesses(dir)).toEqual([])
      if (v.mode === 'on') expect(await devContainers()).toEqual([])
    }, 420_000)
  }
})
