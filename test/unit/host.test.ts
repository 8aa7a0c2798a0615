import {createSocket} from 'node:dgram'
import {mkdir, writeFile} from 'node:fs/promises'
import {createServer as createHttpServer, type Server as HttpServer} from 'node:http'
import {createServer, type AddressInfo} from 'node:net'
import {join} from 'node:path'

import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {
  checkSshd,
  cometbftStatus,
  diskUsage,
  execRead,
  firewallFindings,
  firewallStatus,
  iptablesInputPolicy,
  listeningPorts,
  nftInputChains,
  parseProcNet,
  sshdFindings,
  sshdGlobalSettings,
  systemMetrics,
  type ExecRead,
} from '../../src/node/host.js'
import {tempDir} from '../helpers/hq.js'

let dir: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({dir, cleanup} = await tempDir('jil-host-'))
})
afterEach(async () => cleanup())

const HEADER4 = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
const HEADER6 = '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
const row = (i: number, local: string, remote: string, st: string) => `   ${i}: ${local} ${remote} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${1000 + i} 1 0000000000000000 100 0 0 10 0\n`

const TCP4 =
  HEADER4 +
  row(0, '00000000:0016', '00000000:0000', '0A') + // 0.0.0.0:22 LISTEN
  row(1, '0100007F:1538', '00000000:0000', '0A') + // 127.0.0.1:5432 LISTEN
  row(2, '0100007F:DE32', '0100007F:1538', '01') + // established: not listening
  row(3, '0100007F:1538', '00000000:0000', '0A') // the same listener again (SO_REUSEPORT)
const TCP6 =
  HEADER6 +
  row(0, '00000000000000000000000001000000:01BB', '00000000000000000000000000000000:0000', '0A') + // [::1]:443
  row(1, '00000000000000000000000000000000:1F90', '00000000000000000000000000000000:0000', '0A') + // [::]:8080
  row(2, '0000000000000000FFFF00000100007F:0050', '00000000000000000000000000000000:0000', '0A') + // [::ffff:127.0.0.1]:80
  row(3, '000080FE000000000000000001000000:0035', '00000000000000000000000000000000:0000', '06') // fe80::1:53 TIME_WAIT
const UDP4 =
  HEADER4 +
  row(0, '3500007F:0035', '00000000:0000', '07') + // 127.0.0.53:53 bound
  row(1, '0100007F:9C40', '0100007F:0035', '01') // connected: not open to anyone

describe('listening ports from /proc/net', () => {
  it('parses LISTEN TCP and unconnected UDP sockets, IPv4 and IPv6, in the kernel\'s byte order', () => {
    expect(parseProcNet(TCP4, 'tcp', 4)).toEqual([
      {proto: 'tcp', family: 4, address: '0.0.0.0', port: 22},
      {proto: 'tcp', family: 4, address: '127.0.0.1', port: 5432},
      {proto: 'tcp', family: 4, address: '127.0.0.1', port: 5432},
    ])
    expect(parseProcNet(TCP6, 'tcp', 6)).toEqual([
      {proto: 'tcp', family: 6, address: '::1', port: 443},
      {proto: 'tcp', family: 6, address: '::', port: 8080},
      {proto: 'tcp', family: 6, address: '::ffff:127.0.0.1', port: 80},
    ])
    expect(parseProcNet(UDP4, 'udp', 4)).toEqual([{proto: 'udp', family: 4, address: '127.0.0.53', port: 53}])
    expect(parseProcNet('', 'tcp', 4)).toEqual([])
  })

  it('reads the tables under an injected proc root, deduplicated; a missing table (IPv6 off) is skipped', async () => {
    await mkdir(join(dir, 'net'))
    await writeFile(join(dir, 'net', 'tcp'), TCP4)
    await writeFile(join(dir, 'net', 'tcp6'), TCP6)
    await writeFile(join(dir, 'net', 'udp'), UDP4)
    const ports = await listeningPorts({procRoot: dir})
    expect(ports.map((p) => `${p.proto}/${p.address}/${p.port}`)).toEqual(['tcp/0.0.0.0/22', 'tcp/::ffff:127.0.0.1/80', 'tcp/::1/443', 'tcp/127.0.0.1/5432', 'tcp/::/8080', 'udp/127.0.0.53/53'])
  })

  it('sees a real TCP listener and a bound UDP socket of this process, and not once closed', async () => {
    const server = createServer()
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const tcpPort = (server.address() as AddressInfo).port
    const udp = createSocket('udp4')
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r))
    const udpPort = udp.address().port
    try {
      const ports = await listeningPorts()
      expect(ports).toContainEqual({proto: 'tcp', family: 4, address: '127.0.0.1', port: tcpPort})
      expect(ports).toContainEqual({proto: 'udp', family: 4, address: '127.0.0.1', port: udpPort})
    } finally {
      await new Promise((r) => server.close(r))
      await new Promise<void>((r) => udp.close(r))
    }
    const after = await listeningPorts()
    expect(after.some((p) => p.proto === 'tcp' && p.port === tcpPort && p.address === '127.0.0.1')).toBe(false)
  })
})

describe('sshd_config', () => {
  const noIncludes = async () => []
  const settings = (text: string, includes: Record<string, string[]> = {}) => sshdGlobalSettings(text, async (p) => includes[p] ?? [])

  it('takes the first value, case-insensitively, ignoring comments; = works as a separator', async () => {
    expect(await settings('# PermitRootLogin yes\npermitrootlogin No\nPermitRootLogin yes\nPasswordAuthentication=no # keys only\n')).toEqual({permitRootLogin: 'no', passwordAuthentication: 'no'})
    expect(await settings('PERMITROOTLOGIN YES\n  PasswordAuthentication   "no"\n')).toEqual({permitRootLogin: 'yes', passwordAuthentication: 'no'})
  })

  it('counts only the global part: a Match block runs to the end of its file', async () => {
    const text = 'PasswordAuthentication no\nMatch User deploy\n  PasswordAuthentication yes\n  PermitRootLogin yes\n'
    expect(await settings(text)).toEqual({permitRootLogin: undefined, passwordAuthentication: 'no'})
    // A Match inside an included file ends with that file; the includer's global part goes on.
    const inc = await settings('Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n', {'/etc/ssh/sshd_config.d/*.conf': ['Match Address 10.0.0.0/8\nPermitRootLogin yes\n']})
    expect(inc).toEqual({permitRootLogin: undefined, passwordAuthentication: 'no'})
  })

  it('follows Include before later lines (cloud images set PasswordAuthentication in sshd_config.d)', async () => {
    const s = await settings('Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n', {'/etc/ssh/sshd_config.d/*.conf': ['PasswordAuthentication yes\n']})
    expect(s.passwordAuthentication).toBe('yes')
    expect(await sshdGlobalSettings('Include x\nPermitRootLogin no', noIncludes)).toEqual({permitRootLogin: 'no', passwordAuthentication: undefined})
  })

  it('turns settings into findings with OpenSSH\'s defaults', () => {
    expect(sshdFindings('/c', {permitRootLogin: 'no', passwordAuthentication: 'no'})).toEqual([])
    expect(sshdFindings('/c', {permitRootLogin: 'prohibit-password', passwordAuthentication: 'no'})).toEqual([])
    expect(sshdFindings('/c', {permitRootLogin: undefined, passwordAuthentication: 'no'})).toEqual([]) // default prohibit-password
    const bad = sshdFindings('/c', {permitRootLogin: 'yes', passwordAuthentication: undefined})
    expect(bad.map((f) => [f.id, f.severity])).toEqual([
      ['ssh-permit-root-login', 'critical'],
      ['ssh-password-authentication', 'warning'],
    ])
    expect(bad[1]!.evidence).toContain("OpenSSH's default is yes")
    expect(sshdFindings('/c', {permitRootLogin: 'forced-commands-only', passwordAuthentication: 'no'})).toMatchObject([{id: 'ssh-permit-root-login', severity: 'warning'}])
  })

  it('reads a real config with a relative, globbed Include; a missing file means sshd is not installed', async () => {
    await mkdir(join(dir, 'sshd_config.d'))
    await writeFile(join(dir, 'sshd_config.d', '10-a.conf'), 'PermitRootLogin yes\n')
    await writeFile(join(dir, 'sshd_config.d', '20-b.conf'), 'PermitRootLogin no\nPasswordAuthentication no\n')
    await writeFile(join(dir, 'sshd_config.d', 'ignored.txt'), 'PasswordAuthentication yes\n')
    await writeFile(join(dir, 'sshd_config'), 'Include sshd_config.d/*.conf\nPasswordAuthentication yes\n')
    expect((await checkSshd(join(dir, 'sshd_config'))).map((f) => f.id)).toEqual(['ssh-permit-root-login'])
    expect(await checkSshd(join(dir, 'nope'))).toMatchObject([{id: 'ssh-not-installed', severity: 'info', title: 'sshd not installed'}])
  })
})

const NFT_DROP = `table inet filter {
	set allowed {
		type inet_service
		elements = { 22, 443 }
	}

	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		tcp dport { 22, 443 } accept
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
	}
}
`
const NFT_DOCKER = `table ip nat {
	chain DOCKER {
	}

	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
	}
}
table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy accept;
		tcp dport 22 accept comment "policy drop"
	}
}
table ip6 filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
	}
}
table bridge br {
	chain in {
		type filter hook input priority filter; policy drop;
	}
}
`

describe('firewall', () => {
  it('finds input chains and their policies in nft output', () => {
    expect(nftInputChains(NFT_DROP)).toEqual([{family: 'inet', table: 'filter', chain: 'input', policy: 'drop'}])
    expect(nftInputChains(NFT_DOCKER)).toEqual([
      {family: 'ip', table: 'filter', chain: 'INPUT', policy: 'accept'},
      {family: 'ip6', table: 'filter', chain: 'INPUT', policy: 'drop'},
    ])
    expect(nftInputChains('')).toEqual([])
  })

  it('reads iptables\' INPUT policy', () => {
    expect(iptablesInputPolicy('-P INPUT DROP\n-A INPUT -i lo -j ACCEPT\n')).toBe('DROP')
    expect(iptablesInputPolicy('-P INPUT ACCEPT\n')).toBe('ACCEPT')
    expect(iptablesInputPolicy('')).toBeUndefined()
  })

  const exec = (answers: Record<string, string | Error>): ExecRead => async (cmd) => {
    const a = answers[cmd] ?? new Error(`${cmd}: not installed`)
    if (a instanceof Error) throw a
    return a
  }

  it('decides default-deny from nft, else iptables; says when it cannot tell', async () => {
    expect(await firewallStatus(exec({nft: NFT_DROP}))).toMatchObject({determined: true, defaultDeny: true})
    // An IPv6-only drop leaves IPv4 open: then iptables (legacy tables) decides.
    expect(await firewallStatus(exec({nft: NFT_DOCKER, iptables: '-P INPUT ACCEPT\n'}))).toMatchObject({determined: true, defaultDeny: false})
    expect(await firewallStatus(exec({iptables: '-P INPUT DROP\n'}))).toMatchObject({determined: true, defaultDeny: true, evidence: 'iptables: -P INPUT DROP'})
    const unknown = await firewallStatus(exec({iptables: new Error('iptables: Permission denied (you must be root)')}))
    expect(unknown).toEqual({determined: false, evidence: 'nft: not installed; iptables: Permission denied (you must be root)'})
    expect(firewallFindings(unknown)).toMatchObject([{id: 'firewall-unknown', severity: 'warning'}])
    expect(firewallFindings({determined: true, defaultDeny: false, evidence: 'x'})).toMatchObject([{id: 'firewall-default-allow', severity: 'warning'}])
    expect(firewallFindings({determined: true, defaultDeny: true, evidence: 'x'})).toEqual([])
  })

  it('runs commands read-only with a clear error for a missing tool', async () => {
    await expect(execRead('jil-no-such-tool', [])).rejects.toThrow('jil-no-such-tool: not installed')
    expect(await execRead('sh', ['-c', 'echo -P INPUT DROP'])).toBe('-P INPUT DROP\n')
    await expect(execRead('sh', ['-c', 'echo denied >&2; exit 4'])).rejects.toThrow('sh: denied')
  })
})

describe('CometBFT status', () => {
  let server: HttpServer | undefined
  afterEach(async () => {
    server?.closeAllConnections()
    await new Promise((r) => (server ? server.close(r) : r(undefined)))
    server = undefined
  })
  const serve = async (handler: Parameters<typeof createHttpServer>[1]) => {
    server = createHttpServer(handler)
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  it('reads latest height (a string) and catching_up', async () => {
    const url = await serve((req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(req.url === '/status' ? JSON.stringify({jsonrpc: '2.0', id: -1, result: {sync_info: {latest_block_height: '123456', catching_up: true}}}) : '{}')
    })
    expect(await cometbftStatus(url + '/')).toEqual({latest_height: 123456, catching_up: true})
  })

  it('carries an error instead of throwing: bad answer, HTTP error, no answer in time, nothing listening', async () => {
    const url = await serve((req, res) => res.end(JSON.stringify({result: {}})))
    expect((await cometbftStatus(url)).error).toContain('no sync_info')
    server!.removeAllListeners('request')
    server!.on('request', (_req, res) => {
      res.statusCode = 500
      res.end()
    })
    expect(await cometbftStatus(url)).toMatchObject({latest_height: 0, error: `${url}/status answered 500`})
    server!.removeAllListeners('request')
    server!.on('request', () => {}) // never answers
    expect((await cometbftStatus(url, {timeoutMs: 200})).error).toContain('did not answer within 200 ms')
    // A port nothing listens on.
    const probe = createServer()
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
    const free = (probe.address() as AddressInfo).port
    await new Promise((r) => probe.close(r))
    expect((await cometbftStatus(`http://127.0.0.1:${free}`)).error).toContain('ECONNREFUSED')
  })
})

describe('system metrics', () => {
  it('measures CPU, memory, load and the disk of a path (or its nearest existing ancestor)', async () => {
    const m = await systemMetrics({diskPath: dir})
    expect(m.memory_total_bytes).toBeGreaterThan(0)
    expect(m.memory_used_bytes).toBeGreaterThan(0)
    expect(m.memory_used_bytes).toBeLessThanOrEqual(m.memory_total_bytes)
    expect(m.cpu_percent).toBeGreaterThanOrEqual(0)
    expect(m.cpu_percent).toBeLessThanOrEqual(100)
    expect(m.disk_total_bytes).toBeGreaterThan(0)
    expect(m.disk_percent).toBeGreaterThanOrEqual(0)
    expect(m.disk_percent).toBeLessThanOrEqual(100)
    const d = await diskUsage(join(dir, 'not', 'yet'))
    expect(d.total_bytes).toBe(m.disk_total_bytes)
  })
})
