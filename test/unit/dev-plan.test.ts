import {execFileSync} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import {mkdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {describe, expect, it} from 'vitest'

import {chooseEngine, readDevState} from '../../src/dev/dev.js'
import {demoLayer, imageFor, isStatic, rootfsEntries, sha256, tar} from '../../src/dev/image.js'
import {DEV_SETTINGS_MARKER, writeDevSettings} from '../../src/dev/nodes.js'
import {demoStack, devNodes, nodeDatabaseName, ZONE_SITES} from '../../src/dev/plan.js'
import {NODE_ID_PATTERN, readNodeEnv} from '../../src/node/config.js'
import {loadSettings} from '../../src/node/settings.js'
import {StackSpecSchema} from '../../src/shared/stack-schema.js'
import {ZONES} from '../../src/shared/zones.js'
import {tempDir} from '../helpers/hq.js'

describe('the dev fleet plan', () => {
  it('spreads 20 nodes round-robin over the 13 zones with readable ids, mainnet first then testnet', () => {
    const nodes = devNodes(20)
    expect(nodes.slice(0, 3).map((n) => n.id)).toEqual(['CH-ZUG-01', 'AE-ABU-01', 'SG-SIN-01'])
    expect(new Set(nodes.map((n) => n.id)).size).toBe(20)
    expect(new Set(nodes.map((n) => n.zone))).toEqual(new Set(ZONES))
    for (const n of nodes) {
      expect(n.id).toMatch(NODE_ID_PATTERN)
      expect(n.id.slice(0, 2)).toBe(n.zone.slice(0, 2))
      expect(n.region).toBe(ZONE_SITES[n.zone].region)
    }
    expect(nodes.slice(0, 13).every((n) => n.track === 'mainnet' && n.id.endsWith('-01'))).toBe(true)
    expect(nodes.slice(13).every((n) => n.track === 'testnet' && n.id.endsWith('-02'))).toBe(true)
    expect(nodes[13]!.id).toBe('CH-ZUG-02')
    // The third round is on devnet; a larger fleet keeps going round.
    expect(devNodes(27)[26]).toMatchObject({id: 'CH-ZUG-03', track: 'devnet'})
    expect(devNodes(40)[39]).toMatchObject({id: 'CH-ZUG-04', track: 'mainnet'})
  })

  it('names each node\'s sync database after it', () => {
    expect(nodeDatabaseName('CH-ZUG-01')).toBe('jil_dev_ch_zug_01')
  })

  it('declares a demo stack HQ accepts, runnable with busybox applets only', async () => {
    const {Value} = await import('@sinclair/typebox/value')
    const spec = demoStack()
    expect(Value.Check(StackSpecSchema, spec)).toBe(true)
    expect(spec.services.map((s) => [s.name, s.critical, s.network])).toEqual([
      ['api', true, 'none'],
      ['worker', false, 'none'],
    ])
  })
})

describe('the demo image', () => {
  it('is a tar that GNU tar reads: merged /usr, applet links, passwd', () => {
    const archive = tar(rootfsEntries(Buffer.from('#!/bin/true\n'), ['sh', 'sleep', 'busybox', '[']))
    const listing = execFileSync('tar', ['-tvf', '-'], {input: archive, encoding: 'utf8'})
    expect(listing).toMatch(/\.\/bin -> usr\/bin/)
    expect(listing).toMatch(/\.\/usr\/bin\/sh -> busybox/)
    expect(listing).toMatch(/\.\/usr\/bin\/\[ -> busybox/)
    expect(listing).toMatch(/-rwxr-xr-x root\/root\s+12 1970-01-01 00:00 \.\/usr\/bin\/busybox/)
    expect(listing).toMatch(/drwxrwxrwt root\/root\s+0 1970-01-01 00:00 \.\/tmp\//)
    const passwd = execFileSync('tar', ['-xOf', '-', './etc/passwd'], {input: archive, encoding: 'utf8'})
    expect(passwd).toContain('root:x:0:0:root:/root:/bin/sh')
    expect(listing).not.toMatch(/usr\/bin\/busybox -> /)
  })

  it('builds the same digests every time, one manifest per version over one layer', async () => {
    const a = await demoLayer()
    const b = await demoLayer()
    expect(sha256(a.gz)).toBe(sha256(b.gz))
    const v1 = imageFor(a, 'v1.0')
    const v2 = imageFor(a, 'v1.1')
    expect(imageFor(b, 'v1.0').manifest.digest).toBe(v1.manifest.digest)
    expect(v2.manifest.digest).not.toBe(v1.manifest.digest)
    expect(v2.layer.digest).toBe(v1.layer.digest)
    const manifest = JSON.parse(v1.manifest.bytes.toString())
    expect(manifest.config.digest).toBe(v1.config.digest)
    expect(manifest.layers[0]).toMatchObject({digest: v1.layer.digest, size: a.gz.length})
    expect(JSON.parse(v1.config.bytes.toString()).rootfs.diff_ids).toEqual([sha256(a.tar)])
  })

  it('tells a static busybox from a dynamically linked program', () => {
    // node itself is dynamically linked (it has a program interpreter).
    expect(isStatic(readFileSync(process.execPath))).toBe(false)
    expect(isStatic(Buffer.from('not an ELF file at all, just text that is long enough to look at...'))).toBe(false)
    const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
    const described = bb ? (() => {
      try {
        return execFileSync('file', ['-L', bb], {encoding: 'utf8'})
      } catch {
        return '' // no file(1) here: nothing to compare with
      }
    })() : ''
    if (described.includes('statically linked')) expect(isStatic(readFileSync(bb!))).toBe(true)
    if (described.includes('dynamically linked')) expect(isStatic(readFileSync(bb!))).toBe(false)
  })
})

describe('the dev settings block of node.env', () => {
  it('is appended below the node\'s own values, replaced on the next start, and read by the daemon\'s settings', async () => {
    const tmp = await tempDir('jil-dev-env-')
    try {
      const dir = join(tmp.dir, 'node')
      await mkdir(dir)
      await writeFile(join(dir, 'node.env'), '# Written by `jil node init`\nJIL_NODE_ID=CH-ZUG-01\nJIL_REGION=ch-zug\nJIL_JURISDICTION=CH/FINMA\nJIL_OPERATOR=dev-operator\n')
      await writeDevSettings(dir, {JIL_HEALTH_EVERY: '10s', JIL_SYNC_TRANSPORT: 'postgres-log', JIL_NODE_DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/jil_dev_ch_zug_01', JIL_SYNC_LOG_URL: 'postgres://postgres@127.0.0.1:5432/jil_dev_log'})
      expect((await stat(join(dir, 'node.env'))).mode & 0o777).toBe(0o644)
      await writeDevSettings(dir, {JIL_HEALTH_EVERY: '15s', JIL_NODE_DATABASE_URL: 'postgres://postgres:s3cret@127.0.0.1:5432/jil_dev_ch_zug_01', JIL_SYNC_TRANSPORT: 'postgres-log', JIL_SYNC_LOG_URL: 'postgres://postgres:s3cret@127.0.0.1:5432/jil_dev_log'})
      const text = await readFile(join(dir, 'node.env'), 'utf8')
      expect(text.split(DEV_SETTINGS_MARKER)).toHaveLength(2)
      expect(text).toContain('JIL_OPERATOR=dev-operator\n')
      expect(text).not.toContain('JIL_HEALTH_EVERY=10s')
      // A password in a URL: the file is no longer world-readable.
      expect((await stat(join(dir, 'node.env'))).mode & 0o777).toBe(0o600)
      expect(await readNodeEnv(dir)).toMatchObject({JIL_NODE_ID: 'CH-ZUG-01', JIL_OPERATOR: 'dev-operator'})
      const settings = await loadSettings(dir, {})
      expect(settings.schedule.healthMs).toBe(15_000)
      expect(settings.sync).toMatchObject({transport: 'postgres-log', nodeDatabaseUrl: 'postgres://postgres:s3cret@127.0.0.1:5432/jil_dev_ch_zug_01'})

      // A URL with a query and a password of shell characters (jil dev --database-url '…'): quoted, read back as given.
      const url = 'postgres://jil:p$a"ss`w\\d~&@127.0.0.1:5432/jil_dev_ch_zug_01?sslmode=disable'
      await writeDevSettings(dir, {JIL_NODE_DATABASE_URL: url, JIL_SYNC_TRANSPORT: 'postgres-log', JIL_SYNC_LOG_URL: `${url}&application_name=x`})
      expect((await loadSettings(dir, {})).sync).toMatchObject({nodeDatabaseUrl: url, logUrl: `${url}&application_name=x`})
      expect(await readNodeEnv(dir)).toMatchObject({JIL_NODE_ID: 'CH-ZUG-01'})
    } finally {
      await tmp.cleanup()
    }
  })
})

describe('jil dev start-up choices', () => {
  it('reads dev.json, and sets aside one it did not write with a note instead of failing', async () => {
    const tmp = await tempDir('jil-dev-state-')
    try {
      const path = join(tmp.dir, 'dev.json')
      const notes: string[] = []
      expect(await readDevState(path, notes)).toEqual({version: 1})
      await writeFile(path, JSON.stringify({version: 1, hq_port: 48000, registry_port: 48001}))
      expect(await readDevState(path, notes)).toEqual({version: 1, hq_port: 48000, registry_port: 48001})
      expect(notes).toEqual([])
      for (const broken of ['{"version":1,', 'null', '[1]', '{"version":2,"hq_port":1}']) {
        await writeFile(path, broken)
        const n: string[] = []
        expect(await readDevState(path, n)).toEqual({version: 1})
        expect(n).toEqual([expect.stringContaining('starts afresh')])
      }
      // Ports that are not ports are dropped, not used.
      await writeFile(path, JSON.stringify({version: 1, hq_port: 'x', registry_port: 70000}))
      expect(await readDevState(path, notes)).toEqual({version: 1})
      // A directory in its place is an error to fix, not a state to ignore.
      await rm(path)
      await mkdir(path)
      await expect(readDevState(path, notes)).rejects.toMatchObject({code: 'FILE_INVALID'})
    } finally {
      await tmp.cleanup()
    }
  })

  it('falls back to the no-container runtime under --docker auto when DOCKER_HOST is unusable; --docker on refuses', async () => {
    const tmp = await tempDir('jil-dev-engine-')
    try {
      for (const env of [{DOCKER_HOST: 'ssh://ops@engine.example'}, {JIL_DOCKER_HOST: `unix://${join(tmp.dir, 'nothing.sock')}`}]) {
        const notes: string[] = []
        expect(await chooseEngine('auto', env, notes)).toBeUndefined()
        expect(notes).toEqual([expect.stringMatching(/^no Docker engine \(.+\): the nodes use the no-container runtime/)])
      }
      await expect(chooseEngine('on', {DOCKER_HOST: 'ssh://ops@engine.example'}, [])).rejects.toMatchObject({code: 'DOCKER_HOST_INVALID'})
      await expect(chooseEngine('on', {JIL_DOCKER_HOST: `unix://${join(tmp.dir, 'nothing.sock')}`}, [])).rejects.toMatchObject({code: 'DOCKER_UNREACHABLE'})
      expect(await chooseEngine('off', {DOCKER_HOST: 'ssh://x'}, [])).toBeUndefined()
    } finally {
      await tmp.cleanup()
    }
  })
})
