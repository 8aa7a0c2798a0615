import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {gzipSync} from 'node:zlib'

import {JilError, messageOf} from '../shared/errors.js'
import {exists} from '../shared/files.js'

/**
 * The demo image, built here without Docker: one layer with a busybox rootfs (DESIGN.md §8's test
 * image, from Debian's busybox-static), an image config per version, a schema-2 manifest; pushed to
 * the registry over the distribution API. The build is byte-for-byte reproducible (sorted entries,
 * mtime 0, uid 0), so the same busybox always gives the same digests.
 */

export type ImageBlob = {digest: string; bytes: Buffer}

export type BuiltImage = {layer: ImageBlob; config: ImageBlob; manifest: ImageBlob; mediaType: string}

const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json'

export const BUSYBOX_PATHS = ['/bin/busybox', '/usr/bin/busybox']

export function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`
}

type TarEntry = {name: string; type: 'dir' | 'file' | 'symlink'; mode: number; data?: Buffer; target?: string}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0'
}

/** One ustar header block. */
function tarHeader(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512)
  if (Buffer.byteLength(e.name) > 100) throw new JilError('INTERNAL', `tar entry name too long: ${e.name}`)
  h.write(e.name, 0, 'utf8')
  h.write(octal(e.mode, 8), 100)
  h.write(octal(0, 8), 108)
  h.write(octal(0, 8), 116)
  h.write(octal(size, 12), 124)
  h.write(octal(0, 12), 136)
  h.write('        ', 148)
  h.write(e.type === 'dir' ? '5' : e.type === 'symlink' ? '2' : '0', 156)
  if (e.target) h.write(e.target, 157, 'utf8')
  h.write('ustar\0', 257)
  h.write('00', 263)
  h.write('root', 265)
  h.write('root', 297)
  let sum = 0
  for (const b of h) sum += b
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148)
  return h
}

/** A tar archive of the entries, in the order given, with the two zero blocks at the end. */
export function tar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = []
  for (const e of entries) {
    const data = e.type === 'file' ? (e.data ?? Buffer.alloc(0)) : Buffer.alloc(0)
    parts.push(tarHeader(e, data.length), data)
    const pad = (512 - (data.length % 512)) % 512
    if (pad) parts.push(Buffer.alloc(pad))
  }
  parts.push(Buffer.alloc(1024))
  return Buffer.concat(parts)
}

/**
 * A merged-/usr busybox rootfs: /usr/bin/busybox and a link per applet, /bin and /sbin pointing
 * there, passwd and group for root and nobody. Without busybox, only the skeleton: enough for the
 * no-container runtime, which runs the host's commands, and refused by Docker callers (`runnable`).
 */
export function rootfsEntries(busybox: Buffer | undefined, applets: readonly string[]): TarEntry[] {
  const dirs = ['etc', 'home', 'proc', 'root', 'sys', 'dev', 'tmp', 'usr', 'usr/bin', 'var']
  const entries: TarEntry[] = dirs.map((d) => ({name: `./${d}/`, type: 'dir', mode: d === 'tmp' ? 0o1777 : 0o755}))
  entries.push({name: './etc/passwd', type: 'file', mode: 0o644, data: Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n')})
  entries.push({name: './etc/group', type: 'file', mode: 0o644, data: Buffer.from('root:x:0:\nnogroup:x:65534:\n')})
  entries.push({name: './bin', type: 'symlink', mode: 0o777, target: 'usr/bin'})
  entries.push({name: './sbin', type: 'symlink', mode: 0o777, target: 'usr/bin'})
  entries.push({name: './usr/sbin', type: 'symlink', mode: 0o777, target: 'bin'})
  if (busybox) {
    entries.push({name: './usr/bin/busybox', type: 'file', mode: 0o755, data: busybox})
    for (const a of [...new Set(applets)].sort()) {
      if (a !== 'busybox' && /^[a-z0-9_.[-]+$/.test(a)) entries.push({name: `./usr/bin/${a}`, type: 'symlink', mode: 0o777, target: 'busybox'})
    }
  }
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
}

/** The image of one version over a given layer. */
export function imageFor(layer: {tar: Buffer; gz: Buffer}, version: string, arch = process.arch): BuiltImage {
  const layerBlob = {digest: sha256(layer.gz), bytes: layer.gz}
  const config = Buffer.from(
    JSON.stringify({
      architecture: arch === 'x64' ? 'amd64' : arch,
      os: 'linux',
      config: {
        Cmd: ['/bin/sh'],
        Env: ['PATH=/usr/bin:/bin', `JIL_DEMO_VERSION=${version}`],
        Labels: {'org.opencontainers.image.title': 'jil demo service', 'org.opencontainers.image.version': version},
      },
      rootfs: {type: 'layers', diff_ids: [sha256(layer.tar)]},
    }),
  )
  const configBlob = {digest: sha256(config), bytes: config}
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST_TYPE,
      config: {mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: configBlob.digest},
      layers: [{mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: layer.gz.length, digest: layerBlob.digest}],
    }),
  )
  return {layer: layerBlob, config: configBlob, manifest: {digest: sha256(manifest), bytes: manifest}, mediaType: MANIFEST_TYPE}
}

export type DemoLayer = {tar: Buffer; gz: Buffer; busybox: string | undefined; runnable: boolean}

/**
 * The demo layer from this machine's busybox. `runnable` (a container can run it) needs a static
 * busybox: a dynamically linked one would find no loader inside the image.
 */
export async function demoLayer(): Promise<DemoLayer> {
  let path: string | undefined
  for (const p of BUSYBOX_PATHS) {
    if (await exists(p)) {
      path = p
      break
    }
  }
  const bytes = path ? await readFile(path) : undefined
  let applets: string[] = []
  if (path) {
    try {
      applets = execFileSync(path, ['--list'], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']}).split('\n').filter(Boolean)
    } catch {
      applets = ['sh', 'sleep', 'date', 'test', 'true', 'false', 'cat', 'echo', 'ls']
    }
  }
  const tarBytes = tar(rootfsEntries(bytes, applets))
  return {tar: tarBytes, gz: gzipSync(tarBytes, {level: 6}), busybox: path, runnable: bytes !== undefined && isStatic(bytes)}
}

/** An ELF file without a program interpreter (PT_INTERP) is statically linked. */
export function isStatic(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) return false
  const is64 = elf[4] === 2
  const le = elf[5] === 1
  const u16 = (o: number) => (le ? elf.readUInt16LE(o) : elf.readUInt16BE(o))
  const u32 = (o: number) => (le ? elf.readUInt32LE(o) : elf.readUInt32BE(o))
  const phoff = is64 ? Number(le ? elf.readBigUInt64LE(32) : elf.readBigUInt64BE(32)) : u32(28)
  const phentsize = u16(is64 ? 54 : 42)
  const phnum = u16(is64 ? 56 : 44)
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize
    if (off + 4 > elf.length) return false
    if (u32(off) === 3) return false
  }
  return true
}

/** The digest the registry holds for REPO:TAG, or undefined when it has no such tag. */
export async function registryDigest(registry: string, repo: string, tag: string): Promise<string | undefined> {
  const res = await fetch(`http://${registry}/v2/${repo}/manifests/${tag}`, {method: 'HEAD', headers: {accept: MANIFEST_TYPE}, signal: AbortSignal.timeout(10_000)})
  if (res.status === 404) return undefined
  if (!res.ok) throw new JilError('REGISTRY_ERROR', `the registry at ${registry} answered ${res.status} for ${repo}:${tag}`, {hint: 'see the registry log in the dev data dir'})
  return res.headers.get('docker-content-digest') ?? undefined
}

/** Pushes an image to REGISTRY/REPO:TAG over the distribution API (blobs the registry has are skipped). */
export async function pushImage(registry: string, repo: string, tag: string, img: BuiltImage): Promise<string> {
  const base = `http://${registry}/v2/${repo}`
  try {
    for (const blob of [img.layer, img.config]) {
      if ((await fetch(`${base}/blobs/${blob.digest}`, {method: 'HEAD'})).ok) continue
      const start = await fetch(`${base}/blobs/uploads/`, {method: 'POST'})
      const location = start.headers.get('location')
      if (start.status !== 202 || !location) throw new Error(`starting an upload: ${start.status}`)
      const url = new URL(location, `http://${registry}`)
      url.searchParams.set('digest', blob.digest)
      const put = await fetch(url, {method: 'PUT', body: new Uint8Array(blob.bytes), headers: {'content-type': 'application/octet-stream'}})
      if (put.status !== 201) throw new Error(`uploading ${blob.digest}: ${put.status} ${await put.text()}`)
    }
    const res = await fetch(`${base}/manifests/${tag}`, {method: 'PUT', body: new Uint8Array(img.manifest.bytes), headers: {'content-type': img.mediaType}})
    if (res.status !== 201) throw new Error(`uploading the manifest: ${res.status} ${await res.text()}`)
    return res.headers.get('docker-content-digest') ?? img.manifest.digest
  } catch (err) {
    throw new JilError('REGISTRY_ERROR', `pushing ${registry}/${repo}:${tag} failed: ${messageOf(err)}`, {hint: 'see the registry log in the dev data dir', cause: err})
  }
}
