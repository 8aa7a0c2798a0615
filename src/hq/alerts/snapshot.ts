import {createHash} from 'node:crypto'

import {canonicalJson} from '../../shared/canonical.js'
import type {Db} from '../../shared/db/types.js'
import type {StackView} from '../../shared/hq-client.js'
import {TRACKS, type Track} from '../../shared/manifest.js'
import type {AlertConfig, DesiredRef, FleetSnapshot, RegistryDigest, SnapshotNode, SnapshotRollout, SnapshotService} from './rules.js'

/** A track's stack and what each of its services runs (StackService.view: the same resolution nodes get). */
export interface TrackResolver {
  view(track: Track): Promise<StackView>
}

/**
 * The generated column node_heartbeats.running_key (migration 011) for a list of services: MD5 of
 * the names' and the digests' JSON arrays as PostgreSQL prints jsonb. Names and digests are plain
 * (a service name, sha256:hex), so JSON.stringify spells each element as PostgreSQL does.
 */
export function runningKey(services: readonly {name: string; digest: string | null}[]): string {
  const arr = (xs: readonly (string | null)[]) => `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`
  return createHash('md5')
    .update(arr(services.map((s) => s.name)) + arr(services.map((s) => s.digest)))
    .digest('hex')
}

// Node pins whose manifest is live on the node's track (the image is checked against the spec below).
const PINS_SQL = `
  SELECT p.node_id, p.service, p.digest, p.version, p.pinned_at, m.image, n.track
    FROM node_pins p
    JOIN nodes n ON n.id = p.node_id AND n.status = 'active'
    JOIN manifests m ON m.digest = p.digest AND m.track = n.track AND m.deprecated_at IS NULL`

// Nodes an open rollout moves now.
const UPGRADING_SQL = `
  SELECT DISTINCT rn.node_id FROM rollout_nodes rn JOIN rollouts r ON r.id = rn.rollout_id
   WHERE rn.state IN ('upgrading', 'reverting') AND r.state IN ('running', 'paused', 'reverting')`

// The few security reports with critical findings (a partial index holds them).
const SECURITY_SQL = `SELECT node_id, critical_findings FROM node_reports WHERE agent = 'security' AND critical_findings <> '[]'::jsonb`

// Nodes whose newest unrevoked certificate expires within the warning window (or has expired).
const CERTS_SQL = `
  SELECT subject, max(not_after) AS not_after FROM certificates WHERE kind = 'node' AND revoked_at IS NULL
   GROUP BY subject HAVING max(not_after) <= $1`

const ROLLOUTS_SQL = `
  SELECT id, seq, state, target, image, version, reason, coalesce(finished_at, updated_at) AS at
    FROM rollouts
   WHERE state = 'reverting' OR (state IN ('failed', 'reverted', 'succeeded') AND finished_at > $1)`

/**
 * The joined, unrevoked nodes some rule may fire on, in one pass over nodes and their latest
 * heartbeats: silent or over a threshold (the same thresholds the rules apply), with a certificate
 * near expiry (CERTS_SQL, found beforehand) or critical findings, or not running exactly what their
 * desired state implies (their running_key differs from the expected one). Every other node is
 * healthy by every rule and is left out; for those loaded, the rules still decide.
 */
const CANDIDATES_SQL = `
  WITH expected AS (SELECT * FROM unnest($5::text[], $6::text[]) AS e(node_id, key)),
       track_key AS (SELECT * FROM unnest($7::text[], $8::text[]) AS t(track, key)),
       critical AS (${SECURITY_SQL})
  SELECT n.id, n.zone, n.track, n.run_mode, n.joined_at, h.received_at, h.disk_percent, h.sync_lag_s, s.critical_findings,
         coalesce(h.critical_down OR h.running_key IS DISTINCT FROM coalesce(e.key, t.key), false) AS services_suspect
    FROM nodes n
    LEFT JOIN node_heartbeats h ON h.node_id = n.id
    LEFT JOIN critical s ON s.node_id = n.id
    LEFT JOIN expected e ON e.node_id = n.id
    LEFT JOIN track_key t ON t.track = n.track
   WHERE n.status = 'active' AND n.joined_at IS NOT NULL
     AND (coalesce(h.received_at, n.joined_at) < $1
          OR n.id = ANY($2::text[])
          OR s.node_id IS NOT NULL
          OR h.disk_percent > $3
          OR h.sync_lag_s > $4
          OR h.critical_down
          OR (h.node_id IS NOT NULL AND h.running_key IS DISTINCT FROM coalesce(e.key, t.key)))`

type CandidateRow = {
  id: string
  zone: string
  track: Track
  run_mode: string
  joined_at: Date
  received_at: Date | null
  disk_percent: number | null
  sync_lag_s: number | null
  critical_findings: {id?: string; title?: string}[] | null
  /** A critical service is down, or what runs is not exactly the desired state: the services rules must look. */
  services_suspect: boolean
}

/**
 * The fleet as the alert rules see it, in a fixed handful of set-wise queries whatever its size
 * (never one per node). Desired digests come from each track's resolution (StackService.view, three
 * calls) and every node pin in one query, following StackService.nodeServices' rules without its
 * query per node. Only nodes some rule may fire on are loaded (CANDIDATES_SQL), and their services
 * only where the services rules have something to find: a node running exactly its desired state
 * with no critical service down gets an empty list (no rule about services could fire on it).
 */
export async function loadSnapshot(q: Db, stacks: TrackResolver, now: Date, cfg: AlertConfig, registry?: readonly RegistryDigest[] | null): Promise<FleetSnapshot> {
  const [manifests, pins, upgrading, rollouts, certs, views] = await Promise.all([
    q.query<{digest: string; track: Track; created_at: Date}>('SELECT digest, track, created_at FROM manifests WHERE deprecated_at IS NULL'),
    q.query<{node_id: string; service: string; digest: string; version: string; pinned_at: Date; image: string; track: Track}>(PINS_SQL),
    q.query<{node_id: string}>(UPGRADING_SQL),
    q.query<{id: string; seq: number; state: SnapshotRollout['state']; target: Record<string, unknown>; image: string; version: string; reason: string | null; at: Date}>(ROLLOUTS_SQL, [
      new Date(now.getTime() - cfg.rolloutFailedForMs),
    ]),
    q.query<{subject: string; not_after: Date}>(CERTS_SQL, [new Date(now.getTime() + cfg.certWarningDays * 86_400_000)]),
    Promise.all(TRACKS.map((t) => stacks.view(t))),
  ])
  const expiring = new Map(certs.rows.map((c) => [c.subject, c.not_after]))

  const signedAt = {devnet: new Map<string, Date>(), testnet: new Map<string, Date>(), mainnet: new Map<string, Date>()} satisfies Record<Track, Map<string, Date>>
  for (const m of manifests.rows) signedAt[m.track]?.set(m.digest, m.created_at)

  // Each track's desired services, in spec order (the order the node's heartbeat lists them in).
  const desired = {devnet: new Map<string, DesiredRef>(), testnet: new Map<string, DesiredRef>(), mainnet: new Map<string, DesiredRef>()} satisfies Record<Track, Map<string, DesiredRef>>
  const specImages = {devnet: new Map<string, string>(), testnet: new Map<string, string>(), mainnet: new Map<string, string>()} satisfies Record<Track, Map<string, string>>
  const specOrder: Record<Track, string[] | null> = {devnet: null, testnet: null, mainnet: null}
  const specSince: Record<Track, number> = {devnet: 0, testnet: 0, mainnet: 0}
  for (const v of views) {
    const track = v.track as Track
    if (!v.stack) continue
    specSince[track] = Date.parse(v.stack.created_at)
    specOrder[track] = v.stack.spec.services.map((s) => s.name)
    for (const s of v.stack.spec.services) specImages[track].set(s.name, s.image)
    for (const [service, r] of Object.entries(v.versions)) {
      if (!r) continue
      // Devnet follows its newest manifest: the desired digest changed when that manifest was signed.
      const changed = r.pinned_at ? Date.parse(r.pinned_at) : (signedAt[track].get(r.digest)?.getTime() ?? 0)
      desired[track].set(service, {digest: r.digest, version: r.version, since: new Date(Math.max(specSince[track], changed))})
    }
  }

  const nodePins = new Map<string, Map<string, DesiredRef>>()
  const pinnedTrack = new Map<string, Track>()
  for (const p of pins.rows) {
    // A pin of another image than the track's spec names for the service is not served (as in nodeServices).
    if (specImages[p.track].get(p.service) !== p.image) continue
    let m = nodePins.get(p.node_id)
    if (!m) nodePins.set(p.node_id, (m = new Map()))
    pinnedTrack.set(p.node_id, p.track)
    m.set(p.service, {digest: p.digest, version: p.version, since: new Date(Math.max(specSince[p.track], p.pinned_at.getTime()))})
  }

  // What a node running exactly its desired state reports: its track's key, or its own with pins.
  const expectedKey = (track: Track, own: ReadonlyMap<string, DesiredRef> | undefined): string | null => {
    const order = specOrder[track]
    if (!order) return null
    const services: {name: string; digest: string}[] = []
    for (const name of order) {
      const want = own?.get(name) ?? desired[track].get(name)
      if (want) services.push({name, digest: want.digest})
    }
    return runningKey(services)
  }
  const trackKeys = TRACKS.map((t) => [t, expectedKey(t, undefined)] as const).filter((x): x is readonly [Track, string] => x[1] !== null)
  const pinnedKeys = [...nodePins]
    .map(([nodeId, own]) => [nodeId, expectedKey(pinnedTrack.get(nodeId)!, own)] as const)
    .filter((x): x is readonly [string, string] => x[1] !== null)

  const {candidates, services} = await q.transaction(async (tx) => {
    // One pass over 100k nodes joins three hashes of them: room for them in memory, not on disk.
    await tx.query("SET LOCAL work_mem = '32MB'")
    const {rows: candidates} = await tx.query<CandidateRow>(CANDIDATES_SQL, [
      new Date(now.getTime() - cfg.heartbeatStaleMs),
      [...expiring.keys()],
      cfg.diskCriticalPercent,
      cfg.syncLagWarningS,
      pinnedKeys.map((x) => x[0]),
      pinnedKeys.map((x) => x[1]),
      trackKeys.map((x) => x[0]),
      trackKeys.map((x) => x[1]),
    ])
    const suspects = candidates.filter((c) => c.services_suspect).map((c) => c.id)
    const {rows: services} = suspects.length
      ? await tx.query<{node_id: string; services: SnapshotService[] | null}>("SELECT node_id, body -> 'services' AS services FROM node_heartbeats WHERE node_id = ANY($1::text[])", [suspects])
      : {rows: []}
    return {candidates, services}
  })
  const servicesOf = new Map(services.map((s) => [s.node_id, Array.isArray(s.services) ? s.services : []]))
  const moving = new Set(upgrading.rows.map((r) => r.node_id))

  const nodes: SnapshotNode[] = candidates.map((r) => ({
    id: r.id,
    zone: r.zone,
    track: r.track,
    runMode: r.run_mode,
    joinedAt: r.joined_at,
    upgrading: moving.has(r.id),
    lastHeartbeatAt: r.received_at,
    heartbeat: r.received_at ? {diskPercent: r.disk_percent ?? 0, syncLagS: r.sync_lag_s, services: servicesOf.get(r.id) ?? []} : null,
    certNotAfter: expiring.get(r.id) ?? null,
    securityCritical: (r.critical_findings ?? []).map((f) => ({id: String(f.id ?? ''), title: String(f.title ?? f.id ?? '')})),
    pins: nodePins.get(r.id) ?? null,
  }))

  // The registry walk (registry-scan.ts) against the manifests as they are now: signing clears at the next evaluation, not the next walk.
  const registryUnsigned = registry?.filter((d) => !TRACKS.some((t) => signedAt[t].has(d.digest)))

  return {
    nodes,
    signed: {devnet: new Set(signedAt.devnet.keys()), testnet: new Set(signedAt.testnet.keys()), mainnet: new Set(signedAt.mainnet.keys())},
    desired,
    rollouts: rollouts.rows.map((r) => ({id: r.id, seq: Number(r.seq), state: r.state, target: canonicalJson(r.target), image: r.image, version: r.version, reason: r.reason, at: r.at})),
    ...(registryUnsigned ? {registryUnsigned} : {}),
  }
}
