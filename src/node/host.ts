import {execFile} from 'node:child_process'
import {readdir, readFile, statfs} from 'node:fs/promises'
import {endianness, loadavg} from 'node:os'
import {basename, dirname, isAbsolute, join} from 'node:path'

import type {Finding, Heartbeat} from '../shared/api.js'
import {messageOf, systemCode} from '../shared/errors.js'
import {fileError} from '../shared/files.js'

/**
 * The host as the agents see it: thin adapters over the kernel's tables, sshd's config, the
 * firewall tools and CometBFT's RPC. Parsing is pure (fixture-tested); the I/O around it takes its
 * paths and command runner as parameters.
 */

// ---------------------------------------------------------------------------------------------
// System metrics

export type SystemMetrics = Heartbeat['system']
export type DiskUsage = {used_bytes: number; total_bytes: number; percent: number}

const round1 = (n: number) => Math.round(n * 10) / 10

/**
 * Use of the filesystem holding `path` (or its nearest existing ancestor). The percent is df's:
 * used / (used + available to unprivileged users), so the root-reserved blocks count as full.
 */
export async function diskUsage(path: string): Promise<DiskUsage> {
  for (let p = path; ; p = dirname(p)) {
    try {
      const s = await statfs(p)
      const used = (s.blocks - s.bfree) * s.bsize
      const avail = s.bavail * s.bsize
      return {used_bytes: used, total_bytes: s.blocks * s.bsize, percent: used + avail > 0 ? round1((used / (used + avail)) * 100) : 0}
    } catch (err) {
      if (systemCode(err) !== 'ENOENT' || dirname(p) === p) throw fileError(path, 'disk path', err)
    }
  }
}

/** CPU, memory (used = total − available: page cache is not "used"), load and disk. */
export async function systemMetrics(o: {diskPath: string}): Promise<SystemMetrics> {
  const si = await import('systeminformation')
  const [load, mem, disk] = await Promise.all([si.currentLoad(), si.mem(), diskUsage(o.diskPath)])
  return {
    cpu_percent: round1(load.currentLoad),
    load1: round1(loadavg()[0] ?? 0),
    memory_used_bytes: Math.max(0, mem.total - mem.available),
    memory_total_bytes: mem.total,
    disk_used_bytes: disk.used_bytes,
    disk_total_bytes: disk.total_bytes,
    disk_percent: disk.percent,
  }
}

// ---------------------------------------------------------------------------------------------
// Listening ports
//
// Read from /proc/net/{tcp,tcp6,udp,udp6} directly rather than by spawning `ss`/`netstat` (or
// systeminformation's networkConnections(), which spawns them): those are not installed on every
// minimal host (net-tools is gone from most), a spawn costs more than the read, their output
// differs between versions, and the kernel's table needs no privileges to read. It is the table of
// the reader's network namespace: run the daemon in the host's.

export type ListeningSocket = {proto: 'tcp' | 'udp'; family: 4 | 6; address: string; port: number}

const TCP_LISTEN = '0A'
/** An unconnected UDP socket (TCP_CLOSE in the kernel's numbering): it receives from anyone. */
const UDP_UNCONNECTED = '07'

/** The kernel writes each 32-bit word of an address in host byte order. */
function addressBytes(hex: string): Buffer {
  const b = Buffer.from(hex, 'hex')
  if (endianness() === 'LE') for (let i = 0; i + 4 <= b.length; i += 4) b.subarray(i, i + 4).reverse()
  return b
}

function formatIpv6(b: Buffer): string {
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `::ffff:${[...b.subarray(12)].join('.')}`
  const groups = Array.from({length: 8}, (_, i) => b.readUInt16BE(i * 2))
  // Compress the longest run (≥ 2) of zero groups, as RFC 5952 writes it.
  let best = {at: -1, len: 0}
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > best.len) best = {at: i, len: j - i}
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (best.len < 2) return hex.join(':')
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.len).join(':')}`
}

/** The listening (TCP) or bound, unconnected (UDP) sockets of one /proc/net table. Pure. */
export function parseProcNet(text: string, proto: 'tcp' | 'udp', family: 4 | 6): ListeningSocket[] {
  const out: ListeningSocket[] = []
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    const local = f[1]
    const state = f[3]
    if (!local || !state) continue
    if (proto === 'tcp' ? state !== TCP_LISTEN : state !== UDP_UNCONNECTED) continue
    const m = /^([0-9A-Fa-f]+):([0-9A-Fa-f]{4})$/.exec(local)
    if (!m || m[1]!.length !== (family === 4 ? 8 : 32)) continue
    const bytes = addressBytes(m[1]!)
    const address = family === 4 ? [...bytes].join('.') : formatIpv6(bytes)
    out.push({proto, family, address, port: parseInt(m[2]!, 16)})
  }
  return out
}

/** Every listening socket of this network namespace; a missing table (IPv6 off) is skipped. */
export async function listeningPorts(o: {procRoot?: string} = {}): Promise<ListeningSocket[]> {
  const root = o.procRoot ?? '/proc'
  const tables = [
    ['tcp', 'tcp', 4],
    ['tcp6', 'tcp', 6],
    ['udp', 'udp', 4],
    ['udp6', 'udp', 6],
  ] as const
  const seen = new Map<string, ListeningSocket>()
  for (const [file, proto, family] of tables) {
    const path = join(root, 'net', file)
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if (systemCode(err) === 'ENOENT') continue
      throw fileError(path, 'socket table', err)
    }
    // SO_REUSEPORT listeners appear once per socket: one entry per address is enough.
    for (const s of parseProcNet(text, proto, family)) seen.set(`${s.proto}|${s.address}|${s.port}`, s)
  }
  return [...seen.values()].sort((a, b) => a.proto.localeCompare(b.proto) || a.port - b.port || a.address.localeCompare(b.address))
}

// ---------------------------------------------------------------------------------------------
// sshd_config

export type SshdSettings = {permitRootLogin: string | undefined; passwordAuthentication: string | undefined}

/** Reads the files an `Include` pattern names, in sshd's (sorted) order. */
export type ReadInclude = (pattern: string) => Promise<string[]>

const MAX_INCLUDE_DEPTH = 16

/** One config line as sshd splits it: `Keyword value…` or `Keyword=value`; `#` starts a comment. */
function sshdLine(raw: string): {keyword: string; args: string[]} | undefined {
  const line = raw.replace(/(^|\s)#.*$/, '').trim()
  if (!line) return undefined
  const m = /^([^\s=]+)\s*(?:=\s*|\s+)?(.*)$/.exec(line)
  if (!m) return undefined
  const args = (m[2]!.match(/"[^"]*"|\S+/g) ?? []).map((a) => a.replace(/^"(.*)"$/, '$1'))
  return {keyword: m[1]!.toLowerCase(), args}
}

/**
 * The settings that apply to every connection: sshd takes the FIRST value of a keyword, keywords
 * are case-insensitive, and a `Match` block runs to the end of its file (an included file's block
 * ends with that file), so only what precedes it is global. `Include` is followed (Debian's
 * default config starts with one, and cloud images set PasswordAuthentication in sshd_config.d).
 */
export async function sshdGlobalSettings(text: string, readInclude: ReadInclude): Promise<SshdSettings> {
  const s: SshdSettings = {permitRootLogin: undefined, passwordAuthentication: undefined}
  const walk = async (t: string, depth: number): Promise<void> => {
    for (const raw of t.split('\n')) {
      const l = sshdLine(raw)
      if (!l) continue
      if (l.keyword === 'match') return
      if (l.keyword === 'include' && depth < MAX_INCLUDE_DEPTH) {
        for (const pattern of l.args) for (const inc of await readInclude(pattern)) await walk(inc, depth + 1)
      } else if (l.keyword === 'permitrootlogin') {
        s.permitRootLogin ??= l.args[0]?.toLowerCase()
      } else if (l.keyword === 'passwordauthentication') {
        s.passwordAuthentication ??= l.args[0]?.toLowerCase()
      }
    }
  }
  await walk(text, 0)
  return s
}

/** Include patterns from disk: relative ones are relative to the config's dir; `*` and `?` in the last component. */
export function includeReader(configDir: string): ReadInclude {
  return async (pattern) => {
    const full = isAbsolute(pattern) ? pattern : join(configDir, pattern)
    const name = basename(full)
    let files: string[]
    if (/[*?[]/.test(name)) {
      const re = new RegExp(`^${name.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`)
      try {
        files = (await readdir(dirname(full))).filter((f) => re.test(f)).sort().map((f) => join(dirname(full), f))
      } catch {
        return []
      }
    } else files = [full]
    const texts: string[] = []
    for (const f of files) {
      try {
        texts.push(await readFile(f, 'utf8'))
      } catch {
        // sshd ignores a glob that matches nothing, and a directory is not a config file
      }
    }
    return texts
  }
}

const ROOT_LOGIN_OK = new Set(['no', 'prohibit-password', 'without-password'])

/** Findings on sshd's global settings (OpenSSH's defaults: PermitRootLogin prohibit-password, PasswordAuthentication yes). Pure. */
export function sshdFindings(path: string, s: SshdSettings): Finding[] {
  const findings: Finding[] = []
  const root = s.permitRootLogin ?? 'prohibit-password'
  if (!ROOT_LOGIN_OK.has(root)) {
    findings.push({
      id: 'ssh-permit-root-login',
      severity: root === 'yes' ? 'critical' : 'warning',
      title: `sshd permits root login (${root})`,
      evidence: `${path}: PermitRootLogin ${root}`,
      remediation: `set "PermitRootLogin no" (or prohibit-password) before any Match block in ${path} and reload sshd`,
    })
  }
  const password = s.passwordAuthentication ?? 'yes'
  if (password !== 'no') {
    findings.push({
      id: 'ssh-password-authentication',
      severity: 'warning',
      title: 'sshd accepts passwords',
      evidence: s.passwordAuthentication === undefined ? `${path}: PasswordAuthentication not set (OpenSSH's default is yes)` : `${path}: PasswordAuthentication ${password}`,
      remediation: `set "PasswordAuthentication no" before any Match block in ${path} (and in sshd_config.d) and reload sshd; use keys`,
    })
  }
  return findings
}

/** The sshd check: no config file means no sshd (info); otherwise its global settings. */
export async function checkSshd(path: string): Promise<Finding[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (systemCode(err) !== 'ENOENT') throw fileError(path, 'sshd config', err)
    return [{id: 'ssh-not-installed', severity: 'info', title: 'sshd not installed', evidence: `${path} does not exist`, remediation: 'none needed; if sshd lives elsewhere, set JIL_SSHD_CONFIG'}]
  }
  return sshdFindings(path, await sshdGlobalSettings(text, includeReader(dirname(path))))
}

// ---------------------------------------------------------------------------------------------
// Firewall (read-only: list, never change)

/** Runs a command and returns its stdout; throws when it is missing, refused or fails. */
export type ExecRead = (cmd: string, args: string[]) => Promise<string>

export const execRead: ExecRead = (cmd, args) =>
  new Promise((resolve, reject) => {
    execFile(cmd, args, {timeout: 5000, maxBuffer: 16 * 1024 * 1024, env: {...process.env, LC_ALL: 'C'}}, (err, stdout, stderr) => {
      if (!err) return resolve(stdout)
      const code = systemCode(err)
      const why = code === 'ENOENT' ? 'not installed' : (err as {killed?: boolean}).killed ? 'timed out' : (stderr.trim().split('\n')[0] ?? '') || messageOf(err)
      reject(new Error(`${cmd}: ${why}`))
    })
  })

/** The base chains hooked on input (ip, ip6, inet families) and their policies, from `nft list ruleset`. Pure. */
export function nftInputChains(ruleset: string): {family: string; table: string; chain: string; policy: string}[] {
  const out: {family: string; table: string; chain: string; policy: string}[] = []
  const stack: ('table' | 'chain' | 'other')[] = []
  let table = {family: '', name: ''}
  let chain: {name: string; input: boolean; policy: string} | undefined
  for (const raw of ruleset.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim()
    const t = /^table\s+(\S+)\s+(\S+)\s*\{/.exec(line)
    const c = /^chain\s+(\S+)\s*\{/.exec(line)
    if (t) table = {family: t[1]!, name: t[2]!}
    if (c) chain = {name: c[1]!, input: false, policy: 'accept'}
    // nft prints a base chain's hook and policy on one line: `type filter hook input priority filter; policy drop;`.
    if (chain && stack.at(-1) === 'chain' && /^type\s+\S+\s+hook\s/.test(line)) {
      if (/^type\s+filter\s+hook\s+input\b/.test(line)) chain.input = true
      const p = /;\s*policy\s+(\w+)/.exec(line)
      if (p) chain.policy = p[1]!.toLowerCase()
    }
    let first = true
    for (const ch of line) {
      if (ch === '{') {
        stack.push(first && t ? 'table' : first && c ? 'chain' : 'other')
        first = false
      } else if (ch === '}') {
        if (stack.pop() === 'chain' && chain) {
          if (chain.input && ['ip', 'ip6', 'inet'].includes(table.family)) out.push({family: table.family, table: table.name, chain: chain.name, policy: chain.policy})
          chain = undefined
        }
      }
    }
  }
  return out
}

/** INPUT's policy from `iptables -S INPUT` (`-P INPUT DROP`), or undefined. Pure. */
export function iptablesInputPolicy(text: string): string | undefined {
  return /^-P INPUT (\S+)/m.exec(text)?.[1]?.toUpperCase()
}

export type FirewallStatus = {determined: true; defaultDeny: boolean; evidence: string} | {determined: false; evidence: string}

/**
 * Whether inbound traffic is denied by default: an nftables input chain (ip or inet, so IPv4 is
 * covered) with policy drop, else iptables' INPUT policy DROP (iptables-legacy keeps its own tables).
 */
export async function firewallStatus(exec: ExecRead = execRead): Promise<FirewallStatus> {
  const seen: string[] = []
  const errors: string[] = []
  try {
    const chains = nftInputChains(await exec('nft', ['list', 'ruleset']))
    const deny = chains.find((c) => c.policy === 'drop' && c.family !== 'ip6')
    if (deny) return {determined: true, defaultDeny: true, evidence: `nft: chain ${deny.family} ${deny.table} ${deny.chain} has policy drop`}
    seen.push(chains.length ? `nft: input chains ${chains.map((c) => `${c.family} ${c.table} ${c.chain} (policy ${c.policy})`).join(', ')}` : 'nft: no input chain')
  } catch (err) {
    errors.push(messageOf(err))
  }
  try {
    const policy = iptablesInputPolicy(await exec('iptables', ['-S', 'INPUT']))
    if (policy === 'DROP') return {determined: true, defaultDeny: true, evidence: 'iptables: -P INPUT DROP'}
    seen.push(`iptables: INPUT policy ${policy ?? 'unknown'}`)
  } catch (err) {
    errors.push(messageOf(err))
  }
  return seen.length ? {determined: true, defaultDeny: false, evidence: [...seen, ...errors].join('; ')} : {determined: false, evidence: errors.join('; ')}
}

export function firewallFindings(s: FirewallStatus): Finding[] {
  if (!s.determined) {
    return [{id: 'firewall-unknown', severity: 'warning', title: 'the firewall policy could not be determined', evidence: s.evidence, remediation: 'run the security agent as root with nft or iptables installed, or check the firewall by hand'}]
  }
  if (s.defaultDeny) return []
  return [
    {
      id: 'firewall-default-allow',
      severity: 'warning',
      title: 'inbound traffic is not denied by default',
      evidence: s.evidence,
      remediation: 'give the input chain a drop policy (nft: "policy drop;", iptables: -P INPUT DROP) and allow only the node\'s ports',
    },
  ]
}

// ---------------------------------------------------------------------------------------------
// CometBFT

export type ConsensusStatus = NonNullable<Heartbeat['consensus']>

/**
 * CometBFT's `/status`: latest height and whether it is catching up. Never throws: a node that
 * cannot be asked gives `error` (height 0; the other fields then carry no information).
 */
export async function cometbftStatus(url: string, o: {timeoutMs?: number} = {}): Promise<ConsensusStatus> {
  const timeoutMs = o.timeoutMs ?? 3000
  const fail = (why: string): ConsensusStatus => ({latest_height: 0, catching_up: false, error: why.slice(0, 500)})
  let body: unknown
  try {
    const res = await fetch(`${url.replace(/\/+$/, '')}/status`, {signal: AbortSignal.timeout(timeoutMs), headers: {accept: 'application/json'}})
    if (!res.ok) return fail(`${url}/status answered ${res.status}`)
    body = await res.json()
  } catch (err) {
    const timedOut = (err as {name?: string}).name === 'TimeoutError'
    // fetch wraps the reason ("fetch failed"): the cause says what happened.
    const cause = (err as {cause?: unknown}).cause ?? err
    return fail(timedOut ? `${url}/status did not answer within ${timeoutMs} ms` : `${url}/status: ${systemCode(err) ?? messageOf(cause)}`)
  }
  // JSON-RPC wraps it in `result`; some proxies serve the bare object.
  const b = body as {result?: {sync_info?: Record<string, unknown>}; sync_info?: Record<string, unknown>}
  const sync = b?.result?.sync_info ?? b?.sync_info
  const height = Number(sync?.latest_block_height)
  if (!sync || !Number.isSafeInteger(height) || typeof sync.catching_up !== 'boolean') return fail(`${url}/status has no sync_info.latest_block_height/catching_up`)
  return {latest_height: height, catching_up: sync.catching_up}
}
