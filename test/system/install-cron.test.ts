import {spawn} from 'node:child_process'
import {mkdir, readdir, readFile, stat, utimes, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BIN} from '../helpers/cli.js'
import {tempDir} from '../helpers/hq.js'

const SCRIPT = fileURLToPath(new URL('../../scripts/install-cron.sh', import.meta.url))

type Run = {code: number | null; stdout: string; stderr: string}

/** Runs install-cron.sh with only the environment given (no JIL_* of the test process leaks in). */
function installCron(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SCRIPT, ...args], {env: {PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', ...env}, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({code, stdout, stderr}))
  })
}

/** Every file under dir with its bytes and mtime. */
async function snapshot(dir: string): Promise<Record<string, {bytes: string; mtimeNs: bigint; mode: number}>> {
  const out: Record<string, {bytes: string; mtimeNs: bigint; mode: number}> = {}
  for (const e of await readdir(dir, {recursive: true, withFileTypes: true})) {
    const p = join(e.parentPath, e.name)
    const s = await stat(p, {bigint: true})
    out[p.slice(dir.length)] = {bytes: e.isFile() ? (await readFile(p)).toString('base64') : '<dir>', mtimeNs: s.mtimeNs, mode: Number(s.mode & 0o777n)}
  }
  return out
}

const NODE_FLAGS = ['--node-id', 'JP-CRON-01', '--region', 'jp-tokyo', '--jurisdiction', 'JP/JFSA', '--hq-url', 'https://hq.example.com:8443', '--operator', 'Sakura Nodes']

describe('scripts/install-cron.sh', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let n = 0
  const newRoot = async () => {
    const root = join(tmp.dir, `root${++n}`)
    await mkdir(root)
    return root
  }

  beforeAll(async () => {
    tmp = await tempDir('jil-cron-')
  })
  afterAll(async () => {
    await tmp?.cleanup()
  })

  it('installs node.env (via jil node init), the log dir and /etc/cron.d/jil; a second run changes nothing, byte for byte', async () => {
    const root = await newRoot()
    const first = await installCron(['--root', root, '--jil', BIN, ...NODE_FLAGS], {JIL_CRON_TZ: 'Asia/Tokyo'})
    expect(first.code, first.stderr).toBe(0)
    expect(first.stdout).toMatch(/node\.env: created .*jil node init/)
    expect(first.stdout).toMatch(/cron: .*\/etc\/cron\.d\/jil installed/)

    const env = await readFile(join(root, 'var/lib/jil/node.env'), 'utf8')
    expect(env).toMatch(/^JIL_NODE_ID=JP-CRON-01$/m)
    expect(env).toMatch(/^JIL_JURISDICTION=JP\/JFSA$/m)
    expect(env).toMatch(/^JIL_HQ_URL=https:\/\/hq\.example\.com:8443$/m)
    expect(env).toMatch(/^JIL_OPERATOR="Sakura Nodes"$/m)
    expect((await stat(join(root, 'var/lib/jil/node.key'))).mode & 0o777).toBe(0o600)
    expect((await stat(join(root, 'var/log/jil'))).isDirectory()).toBe(true)

    const cron = await readFile(join(root, 'etc/cron.d/jil'), 'utf8')
    expect((await stat(join(root, 'etc/cron.d/jil'))).mode & 0o777).toBe(0o644)
    if (process.getuid?.() === 0) expect((await stat(join(root, 'etc/cron.d/jil'))).uid).toBe(0)
    expect(cron).toMatch(/^SHELL=\/bin\/sh$/m)
    expect(cron).toMatch(/^PATH=\S*\/usr\/bin\S*$/m)
    const lines = cron.split('\n').filter((l) => l !== '' && !l.startsWith('#') && !/^[A-Z_]+=/.test(l))
    const agentLine = (schedule: string, name: string) => `${schedule} root ${BIN} agent run ${name} --state-dir /var/lib/jil >> /var/log/jil/${name}.log 2>&1`
    expect(lines).toEqual([
      agentLine('* * * * *', 'health'),
      agentLine('0 */6 * * *', 'security'),
      agentLine('0 */4 * * *', 'update'),
      // 02:00 UTC in Tokyo (UTC+9, no DST).
      agentLine('0 11 * * *', 'maintenance'),
    ])
    expect(cron).toMatch(/^# DST: none in Asia\/Tokyo/m)

    // Old mtimes: a rewrite, even of the same bytes within the same second, would show.
    for (const f of ['etc/cron.d/jil', 'var/lib/jil/node.env', 'var/lib/jil/node.key']) await utimes(join(root, f), new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'))
    const before = await snapshot(root)
    // The second run needs no node values: node.env exists.
    const second = await installCron(['--root', root, '--jil', BIN], {JIL_CRON_TZ: 'Asia/Tokyo'})
    expect(second.code, second.stderr).toBe(0)
    expect(second.stdout).toMatch(/node\.env: .* exists, left as it is/)
    expect(second.stdout).toMatch(/cron: .*\/etc\/cron\.d\/jil unchanged/)
    expect(await snapshot(root)).toEqual(before)

    // A different time zone is a different schedule: the file is replaced (and says why).
    const utc = await installCron(['--root', root, '--jil', BIN], {JIL_CRON_TZ: 'UTC'})
    expect(utc.code, utc.stderr).toBe(0)
    expect(utc.stdout).toMatch(/cron: .* updated/)
    expect(await readFile(join(root, 'etc/cron.d/jil'), 'utf8')).toContain(agentLine('0 2 * * *', 'maintenance'))
    expect((await readdir(join(root, 'etc/cron.d'))).sort()).toEqual(['jil'])
    expect((await readFile(join(root, 'var/lib/jil/node.env'), 'utf8'))).toBe(env)
  })

  it('converts 02:00 UTC for TZ=UTC, a DST zone, and the zone of the root (DIR/etc/timezone, DIR/etc/localtime)', async () => {
    const maintenance = async (root: string) => (await readFile(join(root, 'etc/cron.d/jil'), 'utf8')).split('\n').find((l) => l.includes('agent run maintenance'))!.split(' ').slice(0, 5).join(' ')

    const utc = await newRoot()
    expect((await installCron(['--root', utc, '--jil', BIN, ...NODE_FLAGS], {JIL_CRON_TZ: 'UTC'})).code).toBe(0)
    expect(await maintenance(utc)).toBe('0 2 * * *')

    const zurich = await newRoot()
    expect((await installCron(['--root', zurich, '--jil', BIN, ...NODE_FLAGS], {JIL_CRON_TZ: 'Europe/Zurich'})).code).toBe(0)
    const zurichCron = await readFile(join(zurich, 'etc/cron.d/jil'), 'utf8')
    // 03:00 in winter (+0100), 04:00 in summer (+0200), depending on today's date; the file says so.
    expect(['0 3 * * *', '0 4 * * *']).toContain(await maintenance(zurich))
    expect(zurichCron).toMatch(/^# DST: Europe\/Zurich changes its UTC offset \(winter \+0100, summer \+0200\)/m)

    const tokyo = await newRoot()
    await mkdir(join(tokyo, 'etc'))
    await writeFile(join(tokyo, 'etc/timezone'), 'Asia/Tokyo\n')
    const r = await installCron(['--root', tokyo, '--jil', BIN, ...NODE_FLAGS])
    expect(r.code, r.stderr).toBe(0)
    expect(await maintenance(tokyo)).toBe('0 11 * * *')

    const india = await newRoot()
    await mkdir(join(india, 'etc'))
    const {symlink} = await import('node:fs/promises')
    await symlink('/usr/share/zoneinfo/Asia/Kolkata', join(india, 'etc/localtime'))
    expect((await installCron(['--root', india, '--jil', BIN, ...NODE_FLAGS])).code).toBe(0)
    expect(await maintenance(india)).toBe('30 7 * * *')
  })

  it('bad input: one line on stderr, exit 2, nothing written', async () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['--bogus'], {}, /unknown option --bogus/],
      [['--jil', BIN, '--node-id'], {}, /--node-id needs a value/],
      [['--jil', BIN, '--node-id', 'JP-CRON-02', '--region', 'jp-1'], {}, /no node\.env in .* and no --jurisdiction/],
      [['--jil', BIN, ...NODE_FLAGS, '--state-dir', 'relative/dir'], {}, /--state-dir must be an absolute path/],
      // Root's cron runs these paths through /bin/sh: no room for `;`, `$(…)`, `%` or spaces.
      [['--jil', BIN, ...NODE_FLAGS, '--state-dir', '/x;touch${IFS}/pwn'], {}, /--state-dir may hold only letters, digits/],
      [['--jil', BIN, ...NODE_FLAGS, '--log-dir', '/var/log/$(id)'], {}, /--log-dir may hold only letters, digits/],
      [['--jil', BIN, ...NODE_FLAGS, '--log-dir', '/var/log/100%'], {}, /--log-dir may hold only letters, digits/],
      [['--jil', join(tmp.dir, 'no-such-jil'), ...NODE_FLAGS], {}, /is not an executable file/],
      [['--jil', BIN, ...NODE_FLAGS], {JIL_CRON_TZ: 'Mars/Olympus_Mons'}, /unknown time zone 'Mars\/Olympus_Mons'/],
    ]
    for (const [args, env, message] of cases) {
      const root = await newRoot()
      const r = await installCron(['--root', root, ...args], env)
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(message)
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1)
      expect(r.stdout).toBe('')
      expect(await readdir(root)).toEqual([])
    }
    // A value jil node init refuses: its error and hint, exit 2, and nothing installed after it.
    const root = await newRoot()
    const r = await installCron(['--root', root, '--jil', BIN, '--node-id', 'jp-cron-01', '--region', 'jp-1', '--jurisdiction', 'JP/JFSA'])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/not a node id/)
    expect(await snapshot(root)).toEqual({})
  })

  it('takes the node values from the JIL_* environment', async () => {
    const root = await newRoot()
    const r = await installCron(['--root', root, '--jil', BIN], {JIL_CRON_TZ: 'UTC', JIL_NODE_ID: 'KR-CRON-01', JIL_REGION: 'kr-seoul', JIL_JURISDICTION: 'KR/FSC', REDPANDA_SEEDS: 'rp1:9092,rp2:9092'})
    expect(r.code, r.stderr).toBe(0)
    const env = await readFile(join(root, 'var/lib/jil/node.env'), 'utf8')
    expect(env).toMatch(/^JIL_NODE_ID=KR-CRON-01$/m)
    expect(env).toMatch(/^REDPANDA_SEEDS=rp1:9092,rp2:9092$/m)
  })
})
