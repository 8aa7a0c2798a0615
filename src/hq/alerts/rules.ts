import {fingerprintOf, type AlertRule, type AlertSeverity} from '../../shared/alerts.js'
import type {Track} from '../../shared/manifest.js'

/**
 * The alert rules (issue 8), pure: `evaluate(fleet, config, now)` walks the fleet snapshot once,
 * node by node, and returns what is wrong now. Storing, resolving, silencing and notifying are the
 * evaluator's (evaluator.ts); loading the snapshot set-wise is snapshot.ts's.
 */

export type AlertConfig = {
  /** A joined node with no heartbeat for longer than this is stale (default 5 min). */
  heartbeatStaleMs: number
  /** A node certificate expiring within this many days is a warning... */
  certWarningDays: number
  /** ...and within this many, critical (also once expired). */
  certCriticalDays: number
  /** Disk use above this percentage is critical (default 90). */
  diskCriticalPercent: number
  /** A node may run another digest than its desired one for this long after the desired one changed (default 15 min). */
  driftGraceMs: number
  /** Event-sync lag above this many seconds is a warning... (default 60) */
  syncLagWarningS: number
  /** ...and above this many, critical (default 600). */
  syncLagCriticalS: number
  /** A failed or reverted rollout is alerted on for this long after it ended, unless a later one over the same target succeeds (default 24 h). */
  rolloutFailedForMs: number
}

/**
 * The issue's thresholds, but one: certificates. Node certificates live 30 days (LIFETIME_DAYS.node)
 * and nodes renew at 2/3 of that, 10 days before expiry, so the issue's "≤ 30 days" would hold for
 * every node from the moment it joins. A warning at ≤ 10 days means the node missed its renewal.
 */
export const DEFAULT_ALERT_CONFIG: Readonly<AlertConfig> = {
  heartbeatStaleMs: 5 * 60_000,
  certWarningDays: 10,
  certCriticalDays: 7,
  diskCriticalPercent: 90,
  driftGraceMs: 15 * 60_000,
  syncLagWarningS: 60,
  syncLagCriticalS: 600,
  rolloutFailedForMs: 24 * 3_600_000,
}

/** A service as the node's latest heartbeat reports it (what the rules need of it). */
export type SnapshotService = {name: string; critical: boolean; state: string; health: string; digest: string | null}

/** What a service should run, and since when (the later of the spec's and the pin's or manifest's time). */
export type DesiredRef = {digest: string; version: string; since: Date}

/** A joined, unrevoked node, with what HQ last heard from it. */
export type SnapshotNode = {
  id: string
  zone: string
  track: Track
  /** HQ's run mode for the node: services of a paused or stopped node are down on purpose. */
  runMode: string
  joinedAt: Date
  /** An open rollout is moving the node now (its own health gate judges the services). */
  upgrading: boolean
  lastHeartbeatAt: Date | null
  heartbeat: {diskPercent: number; syncLagS: number | null; services: SnapshotService[]} | null
  /** not_after of the node's newest unrevoked certificate (loaded when within the warning window; null: not near expiry, or none). */
  certNotAfter: Date | null
  /** The critical findings of the node's latest security report. */
  securityCritical: {id: string; title: string}[]
  /** The node's own pins (a rollout's, a rollback's), over its track's: only those nodes serve. */
  pins: ReadonlyMap<string, DesiredRef> | null
}

export type SnapshotRollout = {
  id: string
  seq: number
  state: 'failed' | 'reverting' | 'reverted' | 'succeeded'
  /** The target as canonical JSON: rollouts over the same nodes compare equal. */
  target: string
  image: string
  version: string
  reason: string | null
  /** When it ended (reverting: when it last changed). */
  at: Date
}

/** A digest in the registry, with the tags that point at it (repository as manifests name it: HOST:PORT/NAME). */
export type RegistryDigest = {repository: string; tags: string[]; digest: string}

/** The fleet as the rules see it, loaded in a few set-wise queries. */
export type FleetSnapshot = {
  nodes: readonly SnapshotNode[]
  /** Digests with a live (signed, not deprecated) manifest, per track. */
  signed: Readonly<Record<Track, ReadonlySet<string>>>
  /** The track's resolution of its stack: service → what it should run. */
  desired: Readonly<Record<Track, ReadonlyMap<string, DesiredRef>>>
  /** Rollouts that failed, are reverting, or ended within the window. */
  rollouts: readonly SnapshotRollout[]
  /**
   * The registry's digests with no live manifest on any track, one per repository and digest, from
   * the last completed registry walk. Absent: HQ has no registry, or no walk has completed yet.
   */
  registryUnsigned?: readonly RegistryDigest[]
}

/** Something wrong now. */
export type AlertFinding = {
  fingerprint: string
  rule: AlertRule
  subject: string
  nodeId: string | null
  severity: AlertSeverity
  summary: string
  details: Record<string, unknown>
  /** When the condition began, if known (a new alert's first_seen); else the evaluation's time. */
  since?: Date
}

const DAY = 86_400_000

/** One pass over the fleet: every rule, every node. */
export function evaluate(fleet: FleetSnapshot, cfg: AlertConfig, now: Date): AlertFinding[] {
  const out: AlertFinding[] = []
  const t = now.getTime()
  const find = (rule: AlertRule, subject: string, nodeId: string | null, severity: AlertSeverity, summary: string, details: Record<string, unknown>, since?: Date) =>
    out.push({fingerprint: fingerprintOf(rule, subject), rule, subject, nodeId, severity, summary, details, ...(since ? {since} : {})})

  for (const n of fleet.nodes) {
    const id = n.id
    const heard = n.lastHeartbeatAt ?? n.joinedAt
    const silentMs = t - heard.getTime()
    if (silentMs > cfg.heartbeatStaleMs) {
      find('heartbeat-stale', id, id, 'critical', n.lastHeartbeatAt ? `${id}: no heartbeat for ${duration(silentMs)}` : `${id}: no heartbeat since it joined ${duration(silentMs)} ago`, {
        last_heartbeat_at: n.lastHeartbeatAt?.toISOString() ?? null,
        silent_s: Math.floor(silentMs / 1000),
      }, new Date(heard.getTime() + cfg.heartbeatStaleMs))
    }

    if (n.certNotAfter) {
      const leftMs = n.certNotAfter.getTime() - t
      if (leftMs <= cfg.certWarningDays * DAY) {
        const critical = leftMs <= cfg.certCriticalDays * DAY
        find('cert-expiring', id, id, critical ? 'critical' : 'warning', leftMs <= 0 ? `${id}: its certificate expired ${duration(-leftMs)} ago` : `${id}: its certificate expires in ${duration(leftMs)}`, {
          not_after: n.certNotAfter.toISOString(),
          days_left: Math.floor(leftMs / DAY),
        })
      }
    }

    if (n.securityCritical.length > 0) {
      const f = n.securityCritical
      find('security-critical', id, id, 'critical', `${id}: ${f.length} critical security finding${f.length === 1 ? '' : 's'} (${f[0]!.title}${f.length > 1 ? ', …' : ''})`, {findings: f})
    }

    const hb = n.heartbeat
    if (!hb) continue

    if (hb.diskPercent > cfg.diskCriticalPercent) {
      find('disk-critical', id, id, 'critical', `${id}: disk ${round1(hb.diskPercent)} % full`, {disk_percent: round1(hb.diskPercent), threshold: cfg.diskCriticalPercent})
    }
    if (hb.syncLagS !== null && hb.syncLagS > cfg.syncLagWarningS) {
      const critical = hb.syncLagS > cfg.syncLagCriticalS
      find('sync-lag', id, id, critical ? 'critical' : 'warning', `${id}: event sync ${duration(hb.syncLagS * 1000)} behind`, {lag_s: hb.syncLagS, threshold_s: critical ? cfg.syncLagCriticalS : cfg.syncLagWarningS})
    }

    const signed = fleet.signed[n.track]
    const desired = fleet.desired[n.track]
    let down: {service: string; state: string; health: string}[] | undefined
    let unsigned: {service: string; digest: string}[] | undefined
    let drift: {service: string; digest: string; desired: string; desired_version: string; since: string}[] | undefined
    for (const s of hb.services) {
      if (s.critical && (s.state !== 'running' || s.health === 'unhealthy')) (down ??= []).push({service: s.name, state: s.state, health: s.health})
      if (s.digest === null) continue
      if (!signed.has(s.digest)) (unsigned ??= []).push({service: s.name, digest: s.digest})
      const want = n.pins?.get(s.name) ?? desired.get(s.name)
      if (want && want.digest !== s.digest && t - want.since.getTime() > cfg.driftGraceMs) {
        ;(drift ??= []).push({service: s.name, digest: s.digest, desired: want.digest, desired_version: want.version, since: want.since.toISOString()})
      }
    }
    // A paused or stopped node runs nothing on purpose; a node in a rollout is judged by the rollout's health gate.
    if (down && n.runMode === 'running' && !n.upgrading) {
      find('service-down', id, id, 'critical', `${id}: ${down.map((d) => `${d.service} ${d.state === 'running' ? d.health : d.state}`).join(', ')}`, {services: down})
    }
    if (unsigned) {
      find('image-unsigned', id, id, 'critical', `${id}: ${unsigned.map((u) => `${u.service} runs ${short(u.digest)}`).join(', ')}, not signed for ${n.track}`, {track: n.track, services: unsigned})
    }
    if (drift && !n.upgrading) {
      find('version-drift', id, id, 'warning', `${id}: ${drift.map((d) => `${d.service} runs ${short(d.digest)}, should run ${d.desired_version}`).join(', ')}`, {services: drift})
    }
  }

  // Unsigned in the registry is a warning: nodes refuse to run it. A node running one is critical (above).
  for (const r of fleet.registryUnsigned ?? []) {
    const tags = r.tags.length ? r.tags.join(', ') : 'untagged'
    find('image-unsigned', `registry:${r.repository}@${r.digest}`, null, 'warning', `${r.repository} ${short(r.digest)} (${tags}) in the registry has no signed manifest`, {
      repository: r.repository,
      tags: r.tags,
      digest: r.digest,
    })
  }

  const since = t - cfg.rolloutFailedForMs
  // A failure is over once a later rollout of the same image over the same target succeeded.
  const fixed = new Map<string, number>()
  for (const r of fleet.rollouts) {
    if (r.state !== 'succeeded') continue
    const k = `${r.target}\0${r.image}`
    fixed.set(k, Math.max(fixed.get(k) ?? 0, r.seq))
  }
  for (const r of fleet.rollouts) {
    if (r.state === 'succeeded') continue
    if (r.state !== 'reverting' && r.at.getTime() <= since) continue
    if ((fixed.get(`${r.target}\0${r.image}`) ?? 0) > r.seq) continue
    find('rollout-failed', r.id, null, r.state === 'reverted' ? 'warning' : 'critical', `rollout ${r.id} of ${r.image} ${r.version} ${r.state}${r.reason ? `: ${r.reason}` : ''}`, {
      state: r.state,
      target: JSON.parse(r.target) as unknown,
      image: r.image,
      version: r.version,
      reason: r.reason,
    }, r.at)
  }
  return out
}

function round1(n: number): number {
  return Math.round(n * 10) / 10
}

function short(digest: string): string {
  return digest.startsWith('sha256:') ? digest.slice(0, 19) : digest
}

/** 90 s → "1m30s", 3 days → "3d": the two largest units, for summaries. */
export function duration(ms: number): string {
  let s = Math.max(0, Math.floor(ms / 1000))
  const parts: string[] = []
  for (const [unit, size] of [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (s >= size || (unit === 's' && parts.length === 0)) {
      parts.push(`${Math.floor(s / size)}${unit}`)
      s %= size
    }
    if (parts.length === 2) break
  }
  return parts.join('')
}
