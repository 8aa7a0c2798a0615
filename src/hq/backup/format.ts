/**
 * The backup archive container: one file, written as a stream and read as a stream.
 *
 *   "jilbak1\n" | u32 header length | header JSON | SHA-256(header JSON) | [HMAC-SHA256(mac key, header JSON)] | body
 *
 * The body is a gzip stream of frames (u8 type, u32 length, payload): a prelude, members (a begin
 * frame naming the member, then data frames), the manifest, and an end frame. With a passphrase the
 * gzip stream is sealed in 64 KiB chunks with AES-256-GCM under a scrypt-derived key (the STREAM
 * construction of age: nonce = chunk counter ‖ last-chunk flag), so a truncated or altered archive
 * fails authentication chunk by chunk, and a cut at a chunk boundary is caught by the flag.
 * The header's own hash tells a damaged header from a wrong passphrase (whose MAC fails).
 */
import {createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, scrypt, timingSafeEqual} from 'node:crypto'
import {once} from 'node:events'
import {createReadStream, createWriteStream} from 'node:fs'
import {open} from 'node:fs/promises'
import {StringDecoder} from 'node:string_decoder'
import {pipeline, Transform, type Readable, type TransformCallback, type Writable} from 'node:stream'
import {createGunzip, createGzip} from 'node:zlib'

import {JilError, systemCode} from '../../shared/errors.js'
import {fileError} from '../../shared/files.js'

export const MAGIC = Buffer.from('jilbak1\n')
export const FORMAT = 1
const CHUNK = 64 * 1024
const TAG = 16
const MAX_HEADER = 64 * 1024
/** Frames carry at most this much: data is cut into pieces; the manifest of a large HQ stays well below. */
export const MAX_FRAME = 16 * 1024 * 1024
const DATA_PIECE = 1024 * 1024

/** scrypt at N=2^17, r=8: 128 MiB and about half a second per derivation, once per backup or restore. */
const KDF_DEFAULT = {n: 2 ** 17, r: 8, p: 1}
/**
 * What a restore accepts from a header: what this jil writes, with room for a stronger setting, and
 * no more. The header is checked only after the derivation, so a crafted one must not be able to
 * ask for gigabytes or minutes of scrypt (at most 512 MiB here).
 */
const KDF_MAX = {n: 2 ** 18, r: 8, p: 2}

export type Encryption = {kdf: 'scrypt'; n: number; r: number; p: number; salt: string; cipher: 'aes-256-gcm'; chunk_bytes: number}
export type ArchiveHeader = {format: number; compression: 'gzip'; encryption: Encryption | null}

export const FRAME = {prelude: 0x50, begin: 0x42, data: 0x44, manifest: 0x4d, end: 0x5a} as const
export type FrameType = (typeof FRAME)[keyof typeof FRAME]

type Keys = {enc: Buffer; mac: Buffer}

async function deriveKeys(passphrase: string, e: Pick<Encryption, 'n' | 'r' | 'p' | 'salt'>): Promise<Keys> {
  const out = await new Promise<Buffer>((resolve, reject) =>
    scrypt(passphrase.normalize('NFC'), Buffer.from(e.salt, 'base64'), 64, {N: e.n, r: e.r, p: e.p, maxmem: 128 * e.n * e.r * e.p + 64 * 1024 * 1024}, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  )
  return {enc: out.subarray(0, 32), mac: out.subarray(32)}
}

function nonce(counter: bigint, last: boolean): Buffer {
  const n = Buffer.alloc(12)
  n.writeBigUInt64BE(counter, 3)
  n[11] = last ? 1 : 0
  return n
}

/** Seals the gzip stream chunk by chunk; the final (possibly short or empty) chunk carries the last flag. */
class SealStream extends Transform {
  private buf: Buffer = Buffer.alloc(0)
  private counter = 0n
  constructor(private readonly key: Buffer) {
    super()
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    // Strictly more than a chunk: the last chunk is only known at the end, so it is always sealed in _flush.
    while (this.buf.length > CHUNK) {
      this.push(this.seal(this.buf.subarray(0, CHUNK), false))
      this.buf = this.buf.subarray(CHUNK)
    }
    cb()
  }
  override _flush(cb: TransformCallback): void {
    this.push(this.seal(this.buf, true))
    cb()
  }
  private seal(plain: Buffer, last: boolean): Buffer {
    const c = createCipheriv('aes-256-gcm', this.key, nonce(this.counter++, last))
    return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()])
  }
}

/** Opens what SealStream wrote; refuses anything altered, reordered, cut short or extended. */
class OpenStream extends Transform {
  private buf: Buffer = Buffer.alloc(0)
  private counter = 0n
  constructor(private readonly key: Buffer) {
    super()
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    try {
      while (this.buf.length > CHUNK + TAG) {
        this.push(this.open(this.buf.subarray(0, CHUNK + TAG), false))
        this.buf = this.buf.subarray(CHUNK + TAG)
      }
      cb()
    } catch (err) {
      cb(err as Error)
    }
  }
  override _flush(cb: TransformCallback): void {
    try {
      if (this.buf.length < TAG) throw truncated()
      this.push(this.open(this.buf, true))
      cb()
    } catch (err) {
      cb(err as Error)
    }
  }
  private open(sealed: Buffer, last: boolean): Buffer {
    const n = this.counter++
    const attempt = (flag: boolean) => {
      const d = createDecipheriv('aes-256-gcm', this.key, nonce(n, flag))
      d.setAuthTag(sealed.subarray(sealed.length - TAG))
      return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG)), d.final()])
    }
    try {
      return attempt(last)
    } catch {
      // A full chunk that opens as "not last" where the file ends: the archive was cut at a chunk boundary.
      if (last) {
        try {
          attempt(false)
        } catch {
          throw corrupt('a sealed chunk fails authentication (it was cut short or altered)')
        }
        throw truncated()
      }
      throw corrupt('a sealed chunk fails authentication (it was cut short or altered)')
    }
  }
}

/**
 * A table member's rows (one JSON document per line) as its data frames arrive. Frames cut a member
 * at any byte (ArchiveWriter.data), inside a line and inside a UTF-8 character: both are carried over
 * to the next frame.
 */
export class MemberLines {
  private readonly text = new StringDecoder('utf8')
  private partial = ''

  /** The lines this frame completes. */
  push(bytes: Buffer): string[] {
    const lines = (this.partial + this.text.write(bytes)).split('\n')
    this.partial = lines.pop()!
    return lines
  }

  /** What is left at the member's end: '' when its last line was complete. */
  rest(): string {
    return this.partial + this.text.end()
  }
}

/** A JSON object (not null, not an array): what every header, manifest and member start is. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function truncated(): JilError {
  return new JilError('BACKUP_TRUNCATED', 'the backup archive is truncated (it ends before its last member)', {
    hint: 'the copy is incomplete: copy the archive again from where it was written, and compare its size',
  })
}

export function corrupt(why: string): JilError {
  return new JilError('BACKUP_CORRUPT', `the backup archive is damaged or was altered: ${why}`, {
    hint: 'restore from another copy of the archive; this one cannot be trusted',
  })
}

function frame(type: FrameType, payload: Uint8Array): Buffer {
  const h = Buffer.alloc(5)
  h[0] = type
  h.writeUInt32BE(payload.length, 1)
  return Buffer.concat([h, payload])
}

/**
 * Writes an archive: header first, then frames through gzip (and the sealing stream).
 * `finish()` ends the streams and waits until everything reached the disk.
 */
export class ArchiveWriter {
  private readonly gzip = createGzip({level: 6})
  private readonly done: Promise<void>

  private constructor(sink: Writable, sealKey: Buffer | undefined) {
    const stages: (Transform | Writable)[] = sealKey ? [new SealStream(sealKey)] : []
    this.done = new Promise((resolve, reject) =>
      (pipeline as (...s: unknown[]) => void)(this.gzip, ...stages, sink, (err: Error | null | undefined) => (err ? reject(err) : resolve())),
    )
    // Surfaced by finish() or by the next write; never an unhandled rejection meanwhile.
    this.done.catch(() => {})
  }

  /** Creates `path` (0600, never an existing file); `flush` makes its end wait for fsync, so a rename after it publishes a durable archive. */
  static async create(path: string, passphrase: string | undefined): Promise<ArchiveWriter> {
    let header: ArchiveHeader
    let keys: Keys | undefined
    if (passphrase !== undefined) {
      const encryption: Encryption = {kdf: 'scrypt', ...KDF_DEFAULT, salt: randomBytes(16).toString('base64'), cipher: 'aes-256-gcm', chunk_bytes: CHUNK}
      keys = await deriveKeys(passphrase, encryption)
      header = {format: FORMAT, compression: 'gzip', encryption}
    } else {
      header = {format: FORMAT, compression: 'gzip', encryption: null}
    }
    const json = Buffer.from(JSON.stringify(header))
    const len = Buffer.alloc(4)
    len.writeUInt32BE(json.length)
    const parts = [MAGIC, len, json, createHash('sha256').update(json).digest()]
    if (keys) parts.push(createHmac('sha256', keys.mac).update(json).digest())
    const sink = createWriteStream(path, {flags: 'wx', mode: 0o600, flush: true})
    await new Promise<void>((resolve, reject) => {
      sink.once('open', () => resolve())
      sink.once('error', reject)
    })
    // Queued ahead of everything gzip will write.
    sink.write(Buffer.concat(parts))
    return new ArchiveWriter(sink, keys?.enc)
  }

  async frame(type: FrameType, payload: Uint8Array): Promise<void> {
    if (!this.gzip.write(frame(type, payload))) {
      await Promise.race([once(this.gzip, 'drain'), this.done.then(() => {})])
    }
  }

  async json(type: FrameType, value: unknown): Promise<void> {
    await this.frame(type, Buffer.from(JSON.stringify(value)))
  }

  /** A member's bytes, cut into data frames. */
  async data(bytes: Uint8Array): Promise<void> {
    for (let i = 0; i < bytes.length; i += DATA_PIECE) await this.frame(FRAME.data, bytes.subarray(i, i + DATA_PIECE))
  }

  async finish(): Promise<void> {
    await this.frame(FRAME.end, new Uint8Array(0))
    this.gzip.end()
    await this.done
  }

  /** Stops writing after a failure (the caller removes the file). */
  abort(): void {
    this.gzip.destroy()
  }
}

export type Frame = {type: FrameType; payload: Buffer}

/** What a reader needs to open an archive: the passphrase when it is sealed. */
export type OpenArchive = {header: ArchiveHeader; frames: AsyncGenerator<Frame>}

/**
 * Opens an archive for reading: checks the header (and, when sealed, the passphrase) before any
 * body byte is read, then yields its frames. Every problem is a JilError with a stable code.
 */
/** Keys derived for an archive's salt, so a second pass over it does not pay scrypt again. */
export type KeyCache = Map<string, Keys>

export async function openArchive(path: string, passphrase: string | undefined, cache?: KeyCache): Promise<OpenArchive> {
  let b: Buffer
  try {
    const fh = await open(path, 'r')
    try {
      const head = Buffer.alloc(MAGIC.length + 4 + MAX_HEADER + 64)
      const {bytesRead} = await fh.read(head, 0, head.length, 0)
      b = head.subarray(0, bytesRead)
    } finally {
      await fh.close()
    }
  } catch (err) {
    // Unreadable, a directory, gone: the file's problem, said as one (not a bug of jil's).
    throw fileError(path, 'backup archive', err)
  }
  if (b.length < MAGIC.length || !b.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new JilError('BACKUP_NOT_AN_ARCHIVE', 'the file is not a jil backup archive', {hint: 'pass a file written by jil hq backup'})
  }
  if (b.length < MAGIC.length + 4) throw truncated()
  const len = b.readUInt32BE(MAGIC.length)
  if (len > MAX_HEADER) throw corrupt('the header length is out of range')
  const start = MAGIC.length + 4
  if (b.length < start + len + 32) throw truncated()
  const json = b.subarray(start, start + len)
  if (!createHash('sha256').update(json).digest().equals(b.subarray(start + len, start + len + 32))) throw corrupt('the header checksum does not match')
  let header: ArchiveHeader
  try {
    header = JSON.parse(json.toString('utf8')) as ArchiveHeader
  } catch {
    throw corrupt('the header is not JSON')
  }
  if (!isObject(header) || (header.encryption !== null && !isObject(header.encryption))) throw corrupt('the header is not an archive header')
  if (header.format !== FORMAT || header.compression !== 'gzip') {
    throw new JilError('BACKUP_FORMAT_UNSUPPORTED', `the archive's format ${String(header.format)} is not one this jil reads`, {hint: 'restore it with the jil version that wrote it, or a newer one'})
  }
  let offset = start + len + 32
  let openKey: Buffer | undefined
  const e = header.encryption
  if (e) {
    if (passphrase === undefined) {
      throw new JilError('BACKUP_PASSPHRASE_REQUIRED', 'the archive is encrypted', {hint: 'pass the file holding its passphrase with --passphrase-file FILE'})
    }
    const ok = e.kdf === 'scrypt' && e.cipher === 'aes-256-gcm' && e.chunk_bytes === CHUNK && typeof e.salt === 'string'
    const bounded = [e.n, e.r, e.p].every((v) => Number.isInteger(v) && v >= 1) && e.n <= KDF_MAX.n && (e.n & (e.n - 1)) === 0 && e.r <= KDF_MAX.r && e.p <= KDF_MAX.p
    if (!ok || !bounded) throw new JilError('BACKUP_FORMAT_UNSUPPORTED', 'the archive is encrypted with parameters this jil does not accept', {hint: 'restore it with the jil version that wrote it'})
    if (b.length < offset + 32) throw truncated()
    const cacheKey = `${e.salt}:${e.n}:${e.r}:${e.p}`
    const keys = cache?.get(cacheKey) ?? (await deriveKeys(passphrase, e))
    const mac = createHmac('sha256', keys.mac).update(json).digest()
    if (!timingSafeEqual(mac, b.subarray(offset, offset + 32))) {
      throw new JilError('BACKUP_PASSPHRASE_WRONG', 'the passphrase does not open this archive', {hint: 'pass the --passphrase-file the backup was written with'})
    }
    offset += 32
    cache?.set(cacheKey, keys)
    openKey = keys.enc
  }
  return {header, frames: readFrames(createReadStream(path, {start: offset}), openKey)}
}

/** gzip's and the stream stages' failures, as archive errors. */
function bodyError(err: unknown): JilError {
  if (err instanceof JilError) return err
  const z = (err as {code?: unknown} | undefined)?.code
  const code = typeof z === 'string' && z.startsWith('Z_') ? z : systemCode(err)
  if (code === 'Z_BUF_ERROR' || (err instanceof Error && /unexpected end of file/i.test(err.message))) return truncated()
  if (code?.startsWith('Z_')) return corrupt(`its compressed data is invalid (${code})`)
  return new JilError('BACKUP_UNREADABLE', `cannot read the backup archive: ${code ?? String(err)}`, {hint: 'check the file and that you may read it', cause: err})
}

async function* readFrames(source: Readable, openKey: Buffer | undefined): AsyncGenerator<Frame> {
  let failure: unknown
  const stages: Transform[] = openKey ? [new OpenStream(openKey)] : []
  const gunzip = createGunzip()
  ;(pipeline as (...s: unknown[]) => void)(source, ...stages, gunzip, (err: Error | null | undefined) => {
    if (err) failure ??= err
  })
  let buf: Buffer = Buffer.alloc(0)
  // gunzip hands out 16 KiB at a time: the pieces of a frame are kept apart and joined once it is all there.
  let pieces: Buffer[] = []
  let pending = 0
  let need = 5
  let ended = false
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      pieces.push(chunk)
      pending += chunk.length
      if (buf.length + pending < need) continue
      buf = Buffer.concat([buf, ...pieces], buf.length + pending)
      pieces = []
      pending = 0
      for (;;) {
        need = 5
        if (buf.length < 5) break
        const type = buf[0] as FrameType
        const len = buf.readUInt32BE(1)
        if (!Object.values(FRAME).includes(type) || len > MAX_FRAME) throw corrupt('a frame is malformed')
        need = 5 + len
        if (buf.length < 5 + len) break
        const payload = buf.subarray(5, 5 + len)
        buf = buf.subarray(5 + len)
        if (ended) throw corrupt('data follows the end of the archive')
        if (type === FRAME.end) {
          ended = true
          continue
        }
        yield {type, payload}
      }
    }
  } catch (err) {
    throw bodyError(failure ?? err)
  } finally {
    source.destroy()
  }
  if (failure) throw bodyError(failure)
  if ((buf.length > 0 || pending > 0) && ended) throw corrupt('data follows the end of the archive')
  if (!ended) throw truncated()
}
