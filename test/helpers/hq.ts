import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {pino} from 'pino'

import {initHq, type HqInitResult} from '../../src/hq/init.js'
import {startHq, type HqServeOptions, type RunningHq} from '../../src/hq/server.js'
import {readBundle, type UserBundle} from '../../src/shared/bundle.js'
import {systemClock, type Clock} from '../../src/shared/clock.js'
import type {AuditEntry} from '../../src/shared/audit.js'
import type {HqClient} from '../../src/shared/hq-client.js'

export async function tempDir(prefix = 'jil-test-'): Promise<{dir: string; cleanup: () => Promise<void>}> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return {dir, cleanup: () => rm(dir, {recursive: true, force: true})}
}

/**
 * A real HQ in-process: a fresh data dir, HTTPS with mutual TLS on 127.0.0.1:0. The alert engine's
 * registry walk is off unless `alerts.registryScanMs` asks for it: the shared test registry holds
 * every other test's unsigned digests.
 */
export async function startTestHq(
  o: {databaseUrl?: string; clock?: Clock; joinMinimums?: {cpu_cores: number; memory_bytes: number; disk_bytes: number}; registry?: string; rolloutTickMs?: number} & Pick<HqServeOptions, 'alertEveryMs' | 'alerts' | 'webhooks' | 'events'> = {},
): Promise<{
  hq: RunningHq
  init: HqInitResult
  admin: UserBundle
  dataDir: string
  stop: () => Promise<void>
}> {
  const tmp = await tempDir('jil-hq-')
  const dataDir = join(tmp.dir, 'hq')
  const clock = o.clock ?? systemClock
  const init = await initHq({
    dataDir,
    hostnames: [],
    ...(o.databaseUrl ? {databaseUrl: o.databaseUrl} : {}),
    force: false,
    profilePath: undefined,
    hqUrl: 'https://127.0.0.1:8443',
    clock,
  })
  const hq = await startHq({
    dataDir,
    listen: {host: '127.0.0.1', port: 0},
    databaseUrl: undefined,
    clock,
    logger: pino({level: 'silent'}),
    version: '0.0.0-test',
    ...(o.joinMinimums ? {joinMinimums: o.joinMinimums} : {}),
    ...(o.registry ? {registry: o.registry} : {}),
    ...(o.rolloutTickMs ? {rolloutTickMs: o.rolloutTickMs} : {}),
    ...(o.alertEveryMs ? {alertEveryMs: o.alertEveryMs} : {}),
    alerts: {registryScanMs: 0, ...o.alerts},
    ...(o.webhooks ? {webhooks: o.webhooks} : {}),
    ...(o.events ? {events: o.events} : {}),
  })
  const admin = {...(await readBundle(init.admin_bundle)), hq_url: hq.url}
  return {
    hq,
    init,
    admin,
    dataDir,
    stop: async () => {
      await hq.close()
      await tmp.cleanup()
    },
  }
}

/**
 * Users of a test HQ, each with its bundle and an open client (the admin too, as `admin`), their
 * bundles written under `dir`. Close the clients when done.
 */
export async function testUsers(
  t: {hq: {url: string}; admin: UserBundle},
  dir: string,
  roles: readonly (readonly [name: string, role: string])[],
): Promise<Record<string, {bundle: UserBundle; client: HqClient}>> {
  const [{addUserOnline}, {HqClient}] = await Promise.all([import('../../src/cli/identity.js'), import('../../src/shared/hq-client.js')])
  const users: Record<string, {bundle: UserBundle; client: HqClient}> = {}
  const admin = await HqClient.connect(t.hq.url, t.admin)
  try {
    for (const [name, role] of roles) {
      const bundle = await readBundle((await addUserOnline(admin, t.admin, name, role, join(dir, `${name}.json`))).bundle)
      users[name] = {bundle, client: await HqClient.connect(t.hq.url, bundle)}
    }
  } finally {
    await admin.close()
  }
  users.admin = {bundle: t.admin, client: await HqClient.connect(t.hq.url, t.admin)}
  return users
}

/** A subject's audit entries once `action` is among them (the sequencer places entries a moment after their commit); after 100 tries, what there is. */
export async function auditOnce(client: HqClient, subject: string, action: string): Promise<AuditEntry[]> {
  for (let i = 0; ; i++) {
    const {entries} = await client.request<{entries: AuditEntry[]}>('GET', `/v1/fleet/audit?subject=${subject}&limit=100`)
    if (entries.some((e) => e.action === action) || i >= 100) return entries
    await new Promise((r) => setTimeout(r, 100))
  }
}
