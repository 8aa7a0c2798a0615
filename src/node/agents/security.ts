import type {Finding} from '../../shared/api.js'
import {messageOf} from '../../shared/errors.js'
import type {ImageManifest} from '../../shared/manifest.js'
import {checkSshd, firewallFindings, firewallStatus, listeningPorts, type ListeningSocket} from '../host.js'
import type {ContainerDetails} from '../runtime.js'
import {loadTrust, manifestsFor, verifyImage, type NodeTrust} from '../trust.js'
import type {Agent, AgentContext} from './types.js'

/**
 * The security audit (every 6 h): is every running container of the node a signed image for its
 * track, is the certificate far from expiry, does anything run as root, and is the host shut
 * (sshd, firewall, listening ports). Findings are data; the run wrapper keeps them locally
 * (agents/security.json) and sends them to HQ.
 */

const DAY_MS = 86_400_000

/**
 * Expiry of the node's certificate: critical within 7 days (or expired); a warning within 30 days
 * once the renewal point (2/3 of the lifetime) has passed. Node certificates live 30 days, so a
 * bare "≤ 30 days" would warn about every healthy node; past 2/3 it means renewal is overdue. Pure.
 */
export function certExpiryFinding(cert: {serial: string; notBefore: Date; notAfter: Date}, now: Date): Finding | undefined {
  const left = cert.notAfter.getTime() - now.getTime()
  const days = Math.floor(left / DAY_MS)
  const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime()
  const warnAt = Math.min(30 * DAY_MS, lifetime / 3)
  const evidence = `serial ${cert.serial} expires ${cert.notAfter.toISOString()} (${left <= 0 ? 'expired' : `${days} day(s) left`})`
  if (left <= 7 * DAY_MS) {
    return {
      id: 'cert-expiry',
      severity: 'critical',
      title: left <= 0 ? 'the node certificate has expired' : `the node certificate expires in ${days} day(s)`,
      evidence,
      remediation: left <= 0 ? 'an expired certificate cannot renew: ask an ops-lead for a new token and run jil node join again' : 'run jil node renew now (HQ must be reachable)',
    }
  }
  if (left <= warnAt) {
    return {id: 'cert-expiry', severity: 'warning', title: `the node certificate expires in ${days} day(s) and has not been renewed`, evidence, remediation: 'check the health agent or daemon renews it (HQ reachable), or run jil node renew'}
  }
  return undefined
}

/** `''` (the image's default user, which is root unless the image says otherwise), `0`, `root`, `0:…`, `root:…`. */
export function runsAsRoot(user: string): boolean {
  return /^(0|root)?(:.*)?$/.test(user.trim())
}

/** One finding per protocol/port not on the allowlist, with the addresses it listens on. Pure. */
export function portFindings(sockets: readonly ListeningSocket[], allowlist: readonly number[]): Finding[] {
  const allowed = new Set(allowlist)
  const open = new Map<string, string[]>()
  for (const s of sockets) {
    if (allowed.has(s.port)) continue
    const key = `${s.proto}/${s.port}`
    open.set(key, [...(open.get(key) ?? []), s.family === 6 ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`])
  }
  return [...open].map(([key, addrs]) => ({
    id: `port-open:${key}`,
    severity: 'warning' as const,
    title: `${key} is listening and not on the allowlist`,
    evidence: `listening on ${addrs.join(', ')}`.slice(0, 4000),
    remediation: `stop what listens on ${key}, firewall it, or add the port to JIL_PORT_ALLOWLIST if it belongs there`,
  }))
}

/** Is this container's image the one its labels say, and is that digest signed for the node's track? */
function imageFinding(c: ContainerDetails, trust: NodeTrust, manifests: readonly ImageManifest[] | undefined): Finding | undefined {
  const finding = (why: string): Finding => ({
    id: `unsigned-image:${c.service}`.slice(0, 200),
    severity: 'critical',
    title: `${c.service} runs an image not signed for ${trust.track}`.slice(0, 500),
    evidence: `${c.name} runs ${c.image}: ${why}`.slice(0, 4000),
    remediation: 'stop the container and let the update agent run the signed desired state (jil agent run update); find out how it got there',
  })
  if (!c.digest) return finding('it has no jil.digest label')
  // The label is only a claim: the container must have been created from exactly that digest.
  if (!c.image.endsWith(`@${c.digest}`)) return finding(`it was created from ${c.image}, not from the labelled digest ${c.digest}`)
  const v = verifyImage(trust, manifests ?? [], c.digest)
  return v.ok ? undefined : finding(`${v.code}: ${v.message}`)
}

/** A host check that cannot run is a finding, not a failed audit: the other checks still count. */
async function hostCheck(name: string, fn: () => Promise<Finding[]>): Promise<Finding[]> {
  try {
    return await fn()
  } catch (err) {
    return [{id: `check-failed:${name}`, severity: 'warning', title: `the ${name} check could not run`, evidence: messageOf(err).slice(0, 4000), remediation: 'run the security agent as root (jil agent run security) and see its log'}]
  }
}

async function imageChecks(ctx: AgentContext, containers: readonly ContainerDetails[]): Promise<Finding[]> {
  const trust = await loadTrust(ctx, {refresh: true})
  const byDigest = new Map<string, ImageManifest[]>()
  const findings: Finding[] = []
  for (const c of containers) {
    if (c.digest && c.image.endsWith(`@${c.digest}`) && !byDigest.has(c.digest)) byDigest.set(c.digest, await manifestsFor(ctx, c.digest, {refresh: true}))
    const f = imageFinding(c, trust, c.digest ? byDigest.get(c.digest) : undefined)
    if (f) findings.push(f)
  }
  return findings
}

export const securityAgent: Agent = async (ctx) => {
  const runtime = await ctx.runtime()
  const running = (await runtime.list(ctx.nodeId)).filter((c) => c.state === 'running')
  const details: ContainerDetails[] = []
  for (const c of running) details.push(await runtime.inspect(c.id))

  const images = await imageChecks(ctx, details)

  const id = await ctx.identity()
  const expiry = certExpiryFinding(id.cert, ctx.clock.now())

  const root: Finding[] = details
    .filter((c) => runsAsRoot(c.user))
    .map((c) => ({
      id: `container-root:${c.service}`.slice(0, 200),
      severity: 'warning' as const,
      title: `${c.service} runs as root`.slice(0, 500),
      evidence: `${c.name} (${c.image}) runs as ${c.user === '' ? "the image's default user (root)" : JSON.stringify(c.user)}`,
      remediation: `set "user" (e.g. "1000") for ${c.service} in the stack spec, or build the image with a USER`,
    }))

  const ssh = await hostCheck('ssh', () => checkSshd(ctx.settings.sshdConfig))
  let firewall: {determined: boolean; default_deny: boolean | null} = {determined: false, default_deny: null}
  const fw = await hostCheck('firewall', async () => {
    const st = await firewallStatus()
    firewall = {determined: st.determined, default_deny: st.determined ? st.defaultDeny : null}
    return firewallFindings(st)
  })
  let listening = 0
  const ports = await hostCheck('ports', async () => {
    const sockets = await listeningPorts()
    listening = sockets.length
    return portFindings(sockets, ctx.settings.portAllowlist)
  })

  const findings = [...images, ...(expiry ? [expiry] : []), ...root, ...ssh, ...fw, ...ports]
  const count = (sev: Finding['severity']) => findings.filter((f) => f.severity === sev).length
  return {
    summary: `${count('critical')} critical, ${count('warning')} warning finding(s) over ${details.length} running container(s)`,
    findings,
    details: {
      images: {checked: details.length, unsigned: images.length},
      cert: {serial: id.cert.serial, not_after: id.cert.notAfter.toISOString(), days_left: Math.floor((id.cert.notAfter.getTime() - ctx.clock.now().getTime()) / DAY_MS), finding: expiry?.severity ?? null},
      root: {checked: details.length, flagged: root.length},
      ssh: {findings: ssh.length},
      firewall: {...firewall, findings: fw.length},
      ports: {listening, flagged: ports.filter((f) => f.id.startsWith('port-open:')).length},
    },
  }
}
