// A realistic fleet for the alert bench: N nodes over the 13 zones and three tracks, five services
// each, most of them healthy, a few percent with each kind of trouble the rules look for. The same
// fleet becomes a FleetSnapshot (the in-memory figure) or rows in HQ's tables (the PostgreSQL one).
import {createHash} from 'node:crypto'

import type {DesiredRef, FleetSnapshot, SnapshotNode, SnapshotRollout} from '../../src/hq/alerts/rules.js'
import type {Heartbeat} from '../../src/shared/api.js'
import type {Queryable} from '../../src/shared/db/types.js'
import type {Track} from '../../src/shared/manifest.js'
import {ZONES} from '../../src/shared/zones.js'

const SERVICES = [
  {name: 'validator', critical: true},
  {name: 'api', critical: true},
  {name: 'indexer', critical: false},
  {name: 'relayer', critical: false},
  {name: 'explorer', critical: false},
]
const VERSIONS = ['v95.0', 'v95.1', 'v95.2', 'v95.3']
const MIN = 60_000
const DAY = 86_400_000
const OPERATOR = 'Bench Nodes AG'

export const digestOf = (image: string, version: string): string => `sha256:${createHash('sha256').update(`${image}@${version}`).digest('hex')}`
const image = (service: string) => `jil/${service}`

/** What each track runs: devnet the newest, testnet v95.2, mainnet v95.1 (api: v95.2 rolling out to a fifth of mainnet). */
const TRACK_VERSION: Record<Track, string> = {devnet: 'v95.3', testnet: 'v95.2', mainnet: 'v95.1'}
/** The versions signed onto each track (bits never change between tracks). */
const ON_TRACK: Record<Track, string[]> = {devnet: VERSIONS, testnet: VERSIONS.slice(0, 3), mainnet: VERSIONS.slice(0, 3)}

export type BenchNode = {
  id: string
  zone: string
  track: Track
  joinedAt: Date
  receivedAt: Date
  heartbeat: Heartbeat
  certNotAfter: Date
  certNotBefore: Date
  security: {id: string; severity: 'info' | 'warning' | 'critical'; title: string}[]
  /** The api pin of a node in the mainnet rollout. */
  apiPin: {version: string; digest: string; pinnedAt: Date} | null
}

export type BenchFleet = {
  now: Date
  nodes: BenchNode[]
  specAt: Date
  pinnedAt: Date
  rollouts: SnapshotRollout[]
  /** How many nodes have each trouble (what the rules should find). */
  troubles: Record<string, number>
}

/** Deterministic pseudo-random numbers (mulberry32): the same fleet on every run. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function makeFleet(count: number, now: Date): BenchFleet {
  const rnd = random(42)
  const t = now.getTime()
  const specAt = new Date(t - 7 * DAY)
  const pinnedAt = new Date(t - 2 * DAY)
  const troubles: Record<string, number> = {}
  const mark = (k: string) => (troubles[k] = (troubles[k] ?? 0) + 1)
  const nodes: BenchNode[] = []
  for (let i = 0; i < count; i++) {
    const zone = ZONES[i % ZONES.length]!
    const r = rnd()
    const track: Track = r < 0.1 ? 'devnet' : r < 0.3 ? 'testnet' : 'mainnet'
    const id = `${zone.slice(0, 2)}-B${i.toString(36).toUpperCase().padStart(6, '0')}-01`
    const inRollout = track === 'mainnet' && rnd() < 0.2
    const apiPin = inRollout ? {version: 'v95.2', digest: digestOf(image('api'), 'v95.2'), pinnedAt: new Date(t - Math.floor(rnd() * 6 * 3_600_000))} : null
    const trouble = rnd()
    const services = SERVICES.map((s) => {
      const version = s.name === 'api' && apiPin ? apiPin.version : TRACK_VERSION[track]
      return {name: s.name, critical: s.critical, state: 'running', health: s.critical ? 'healthy' : 'none', digest: digestOf(image(s.name), version), version} as Heartbeat['services'][number]
    })
    let receivedAt = new Date(t - Math.floor(rnd() * 60_000))
    let disk = 20 + rnd() * 55
    let lag = rnd() * 5
    let certLeftDays = 10 + rnd() * 20
    const security: BenchNode['security'] = [
      {id: 'port-open:8080', severity: 'warning', title: 'port 8080 open to the world'},
      {id: 'container-root:explorer', severity: 'warning', title: 'explorer runs as root'},
    ]
    // A few percent with each trouble, as on a bad day.
    if (trouble < 0.02) (receivedAt = new Date(t - (6 + Math.floor(rnd() * 60)) * MIN)), mark('heartbeat-stale')
    else if (trouble < 0.03) (disk = 90.5 + rnd() * 9), mark('disk-critical')
    else if (trouble < 0.04) (services[1] = {...services[1]!, state: 'exited', health: 'none'}), mark('service-down')
    else if (trouble < 0.043) (services[3] = {...services[3]!, digest: `sha256:${createHash('sha256').update(`rogue${i}`).digest('hex')}`}), mark('image-unsigned'), mark('version-drift') // a rogue image is not the desired one either
    else if (trouble < 0.053 && track !== 'devnet' && !apiPin) (services[0] = {...services[0]!, digest: digestOf(image('validator'), 'v95.0'), version: 'v95.0'}), mark('version-drift')
    else if (trouble < 0.073) (lag = 90 + rnd() * 900), mark('sync-lag')
    else if (trouble < 0.078) security.push({id: 'ssh-permit-root-login', severity: 'critical', title: 'sshd permits root login'}), mark('security-critical')
    else if (trouble < 0.088) (certLeftDays = rnd() * 10), mark('cert-expiring')
    const certNotAfter = new Date(t + certLeftDays * DAY)
    const heartbeat: Heartbeat = {
      node_id: id,
      time: receivedAt.toISOString(),
      agent_version: '0.7.0',
      run_mode: 'running',
      desired_sequence: 12,
      containers: {total: 5, running: services.filter((s) => s.state === 'running').length, healthy: 2, unhealthy: 0, exited: services.filter((s) => s.state === 'exited').length, restarting: 0, other: 0},
      services,
      system: {cpu_percent: 10 + (i % 50), load1: 0.5, memory_used_bytes: 6.2e9, memory_total_bytes: 16e9, disk_used_bytes: disk * 5e9, disk_total_bytes: 500e9, disk_percent: disk},
      cert: {serial: '4a5b6c7d8e9f00112233445566778899', not_after: certNotAfter.toISOString()},
      agents: {
        health: {at: receivedAt.toISOString(), ok: true, summary: '5/5 containers running; heartbeat sent', critical: 0, warning: 0},
        security: {at: receivedAt.toISOString(), ok: true, summary: `${security.length} findings`, critical: security.length - 2, warning: 2},
      },
      consensus: {latest_height: 1_200_000 + i, catching_up: false},
      sync: {lag_s: lag, caught_up: lag < 1},
    }
    nodes.push({id, zone, track, joinedAt: new Date(t - 60 * DAY), receivedAt, heartbeat, certNotAfter, certNotBefore: new Date(certNotAfter.getTime() - 30 * DAY), security, apiPin})
  }
  const target = JSON.stringify({zone: 'CH/FINMA'})
  const rollouts: SnapshotRollout[] = [
    {id: 'ro_bench000000000000001', seq: 1, state: 'failed', target, image: 'jil/api', version: 'v95.2', reason: 'CH-B000000-01 unhealthy on v95.2', at: new Date(t - 3 * 3_600_000)},
    {id: 'ro_bench000000000000002', seq: 2, state: 'reverted', target: JSON.stringify({zone: 'SG/MAS'}), image: 'jil/api', version: 'v95.2', reason: 'health timeout', at: new Date(t - 5 * 3_600_000)},
    {id: 'ro_bench000000000000003', seq: 3, state: 'succeeded', target: JSON.stringify({zone: 'DE/BAFIN'}), image: 'jil/api', version: 'v95.2', reason: null, at: new Date(t - 3_600_000)},
  ]
  troubles['rollout-failed'] = 2
  return {now, nodes, specAt, pinnedAt, rollouts, troubles}
}

/** The fleet as loadSnapshot would return it. */
export function toSnapshot(f: BenchFleet): FleetSnapshot {
  const signed = {} as Record<Track, Set<string>>
  const desired = {} as Record<Track, Map<string, DesiredRef>>
  for (const track of ['devnet', 'testnet', 'mainnet'] as Track[]) {
    signed[track] = new Set(SERVICES.flatMap((s) => ON_TRACK[track].map((v) => digestOf(image(s.name), v))))
    desired[track] = new Map(SERVICES.map((s) => [s.name, {digest: digestOf(image(s.name), TRACK_VERSION[track]), version: TRACK_VERSION[track], since: f.pinnedAt}]))
  }
  const nodes: SnapshotNode[] = f.nodes.map((n) => ({
    id: n.id,
    zone: n.zone,
    track: n.track,
    runMode: 'running',
    joinedAt: n.joinedAt,
    upgrading: false,
    lastHeartbeatAt: n.receivedAt,
    heartbeat: {diskPercent: n.heartbeat.system.disk_percent, syncLagS: n.heartbeat.sync?.lag_s ?? null, services: n.heartbeat.services},
    certNotAfter: n.certNotAfter,
    securityCritical: n.security.filter((s) => s.severity === 'critical').map((s) => ({id: s.id, title: s.title})),
    pins: n.apiPin ? new Map([['api', {digest: n.apiPin.digest, version: n.apiPin.version, since: n.apiPin.pinnedAt}]]) : null,
  }))
  return {nodes, signed, desired, rollouts: f.rollouts}
}

/** Writes the fleet into HQ's tables (a migrated, empty database), in batches. */
export async function fillDb(q: Queryable, f: BenchFleet, progress: (s: string) => void): Promise<void> {
  const iso = (d: Date) => d.toISOString()
  await q.query('INSERT INTO operators (name, kyc, created_at, updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING', [OPERATOR, 'approved', f.specAt])
  for (const track of ['devnet', 'testnet', 'mainnet'] as Track[]) {
    const spec = {services: SERVICES.map((s) => ({name: s.name, image: image(s.name), critical: s.critical, command: ['run']}))}
    const record = {kind: 'jil.stack/v1', track, version: 1, spec, created_at: iso(f.specAt), created_by: 'bench', key_id: '0000000000000000', signature: 'bench'}
    await q.query('INSERT INTO stack_specs (track, version, record, created_by, created_at) VALUES ($1, 1, $2, $3, $4)', [track, JSON.stringify(record), 'bench', f.specAt])
    for (const s of SERVICES) {
      for (const v of ON_TRACK[track]) {
        await q.query("INSERT INTO manifests (digest, track, image, version, pushed_by, created_at, body) VALUES ($1, $2, $3, $4, 'bench', $5, $6)", [
          digestOf(image(s.name), v),
          track,
          image(s.name),
          v,
          f.specAt,
          JSON.stringify({image: image(s.name), repository: `registry.example/${image(s.name)}`, version: v}),
        ])
      }
      if (track !== 'devnet') {
        await q.query("INSERT INTO stack_pins (track, service, version, digest, repository, pinned_by, pinned_at) VALUES ($1, $2, $3, $4, $5, 'bench', $6)", [
          track,
          s.name,
          TRACK_VERSION[track],
          digestOf(image(s.name), TRACK_VERSION[track]),
          `registry.example/${image(s.name)}`,
          f.pinnedAt,
        ])
      }
    }
  }
  const BATCH = 5000
  for (let i = 0; i < f.nodes.length; i += BATCH) {
    const b = f.nodes.slice(i, i + BATCH)
    await q.query(
      `INSERT INTO nodes (id, zone, operator, track, status, created_at, joined_at)
       SELECT id, zone, $1, track, 'active', joined, joined FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS x(id, zone, track, joined)`,
      [OPERATOR, b.map((n) => n.id), b.map((n) => n.zone), b.map((n) => n.track), b.map((n) => iso(n.joinedAt))],
    )
    await q.query(
      `INSERT INTO node_heartbeats (node_id, received_at, body) SELECT id, at, body::jsonb FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS x(id, at, body)`,
      [b.map((n) => n.id), b.map((n) => iso(n.receivedAt)), b.map((n) => JSON.stringify(n.heartbeat))],
    )
    await q.query(
      `INSERT INTO certificates (serial, kind, subject, fingerprint, not_before, not_after, issued_at)
       SELECT serial, 'node', id, fp, nb, na, nb FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS x(serial, id, fp, nb, na)`,
      [
        b.map((n) => createHash('sha256').update(`serial${n.id}`).digest('hex').slice(0, 32).replace(/^0/, '1')),
        b.map((n) => n.id),
        b.map((n) => `sha256:${createHash('sha256').update(`fp${n.id}`).digest('hex')}`),
        b.map((n) => iso(n.certNotBefore)),
        b.map((n) => iso(n.certNotAfter)),
      ],
    )
    await q.query(
      `INSERT INTO node_reports (node_id, agent, received_at, body) SELECT id, 'security', at, body::jsonb FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS x(id, at, body)`,
      [
        b.map((n) => n.id),
        b.map((n) => iso(n.receivedAt)),
        b.map((n) =>
          JSON.stringify({
            agent: 'security',
            node_id: n.id,
            started_at: iso(n.receivedAt),
            finished_at: iso(n.receivedAt),
            ok: true,
            summary: `${n.security.length} findings`,
            findings: n.security.map((s) => ({...s, evidence: 'observed by the security agent on the node', remediation: 'see the runbook'})),
            details: {checked: ['containers', 'ssh', 'ports', 'signatures']},
          }),
        ),
      ],
    )
    const pinned = b.filter((n) => n.apiPin)
    if (pinned.length) {
      await q.query(
        `INSERT INTO node_pins (node_id, service, version, digest, repository, pinned_by, pinned_at)
         SELECT id, 'api', v, d, 'registry.example/jil/api', 'rollout', at FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS x(id, v, d, at)`,
        [pinned.map((n) => n.id), pinned.map((n) => n.apiPin!.version), pinned.map((n) => n.apiPin!.digest), pinned.map((n) => iso(n.apiPin!.pinnedAt))],
      )
    }
    progress(`${Math.min(i + BATCH, f.nodes.length)} nodes written`)
  }
  for (const r of f.rollouts) {
    await q.query(
      `INSERT INTO rollouts (id, target, image, repository, digest, version, max_parallel, min_healthy_ms, health_timeout_ms, auto_revert, canary, state, reason, created_by, created_at, updated_at, finished_at)
       VALUES ($1, $2::jsonb, $3, $4, $5, $6, 10, 60000, 600000, false, 0, $7, $8, 'bench', $9, $9, $9)`,
      [r.id, r.target, r.image, `registry.example/${r.image}`, digestOf(r.image, r.version), r.version, r.state, r.reason, r.at],
    )
  }
  await q.exec('ANALYZE')
}
