/**
 * The RFC 6962 (Certificate Transparency) Merkle tree over the audit ledger (DESIGN.md §7):
 *
 *   leaves      = the entries' 32-byte hashes
 *   leaf hash   = SHA-256(0x00 ‖ entry_hash)
 *   interior    = SHA-256(0x01 ‖ left ‖ right)
 *   MTH(D[n])   = SHA-256("") for n = 0; the leaf hash for n = 1; otherwise, with k the largest power
 *                 of two < n, SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))
 *
 * Proofs are RFC 6962 §2.1.1 PATH and §2.1.2 PROOF; verification follows RFC 9162 §2.1.3.2 and §2.1.4.2.
 * Hashes are 32-byte Uint8Arrays (in practice Buffers); every hash this module returns is a fresh copy
 * the caller may keep or mutate. Pure and synchronous: no I/O.
 */
import {createHash, hash as oneShotHash} from 'node:crypto'

/** A SHA-256 digest: 32 bytes. */
export type Hash = Uint8Array

const HASH_BYTES = 32

/** SHA-256 of the empty string: the root of the empty tree. Shared: do not mutate. */
export const EMPTY_ROOT: Hash = createHash('sha256').digest()

// ---------------------------------------------------------------------------------------------
// Hashing. crypto.hash over a reused scratch buffer is about twice as fast as createHash().update()
// ×3 for 65 bytes; everything here is synchronous, so one scratch buffer per kind is safe.

const nodeScratch = Buffer.alloc(1 + 2 * HASH_BYTES)
nodeScratch[0] = 0x01
const leafScratch = Buffer.alloc(1 + HASH_BYTES)
leafScratch[0] = 0x00

/** SHA-256(0x01 ‖ left ‖ right), no argument checks. */
function hashNode(left: Uint8Array, right: Uint8Array): Buffer {
  nodeScratch.set(left, 1)
  nodeScratch.set(right, 1 + HASH_BYTES)
  return oneShotHash('sha256', nodeScratch, 'buffer')
}

/** The RFC 6962 leaf hash, SHA-256(0x00 ‖ data). `data` is normally a 32-byte entry hash, but any length is accepted (test vectors use raw data). */
export function leafHash(entryHash: Uint8Array): Hash {
  if (!(entryHash instanceof Uint8Array)) throw new TypeError('leafHash: expected a Uint8Array')
  if (entryHash.length === HASH_BYTES) {
    leafScratch.set(entryHash, 1)
    return oneShotHash('sha256', leafScratch, 'buffer')
  }
  return createHash('sha256').update(leafScratch.subarray(0, 1)).update(entryHash).digest()
}

/** The RFC 6962 interior node hash, SHA-256(0x01 ‖ left ‖ right). */
export function nodeHash(left: Hash, right: Hash): Hash {
  assertHash(left, 'nodeHash: left')
  assertHash(right, 'nodeHash: right')
  return hashNode(left, right)
}

/** Naive recursive MTH over leaf hashes (reference; used by tests and small trees). */
export function rootOf(leafHashes: readonly Hash[]): Hash {
  leafHashes.forEach((h, i) => assertHash(h, `rootOf: leaf hash ${i}`))
  const mth = (lo: number, hi: number): Hash => {
    const n = hi - lo
    if (n === 1) return Buffer.from(leafHashes[lo]!)
    const k = largestPowerOfTwoBelow(n)
    return hashNode(mth(lo, lo + k), mth(lo + k, hi))
  }
  return leafHashes.length === 0 ? Buffer.from(EMPTY_ROOT) : mth(0, leafHashes.length)
}

// ---------------------------------------------------------------------------------------------
// Hex helpers.

/** Lower-case hex of a hash (or any bytes). */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

/** Parses 64 hex digits into a 32-byte hash; throws RangeError on anything else. */
export function fromHex(hex: string): Hash {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new RangeError(`expected a SHA-256 hash as 64 hex digits, got ${JSON.stringify(String(hex).slice(0, 80))}`)
  }
  return Buffer.from(hex, 'hex')
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

function isHash(h: unknown): h is Hash {
  return h instanceof Uint8Array && h.length === HASH_BYTES
}

function assertHash(h: unknown, what: string): asserts h is Hash {
  if (!(h instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`)
  if (h.length !== HASH_BYTES) throw new RangeError(`${what} must be ${HASH_BYTES} bytes, got ${h.length}`)
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function isPowerOfTwo(n: number): boolean {
  if (n < 1) return false
  if (n <= 0x7fffffff) return (n & (n - 1)) === 0
  return largestPowerOfTwoAtMost(n) === n
}

/** Largest power of two <= n, for a safe integer n >= 1. */
function largestPowerOfTwoAtMost(n: number): number {
  if (n <= 0xffffffff) return 2 ** (31 - Math.clz32(n))
  let p = 2 ** Math.floor(Math.log2(n)) // may be off by one step near powers of two: correct it
  while (p > n) p /= 2
  while (p * 2 <= n) p *= 2
  return p
}

/** k of RFC 6962: the largest power of two strictly less than n, for n >= 2. */
function largestPowerOfTwoBelow(n: number): number {
  return largestPowerOfTwoAtMost(n - 1)
}

const half = (n: number): number => Math.floor(n / 2)

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0
}

function assertCount(n: unknown, what: string): asserts n is number {
  if (!isCount(n)) throw new RangeError(`${what} must be a non-negative safe integer, got ${String(n)}`)
}

// ---------------------------------------------------------------------------------------------
// Storage: one append-only array of 32-byte hashes per tree level, in fixed-size chunks so that no
// single allocation gets huge and growth never copies more than one chunk.

const CHUNK_SHIFT = 15 // 32768 hashes = 1 MiB per chunk
const CHUNK_HASHES = 1 << CHUNK_SHIFT
const CHUNK_MASK = CHUNK_HASHES - 1
const FIRST_CHUNK_HASHES = 16

class HashStore {
  readonly chunks: Uint8Array[] = []
  length = 0

  push(h: Uint8Array): void {
    const c = Math.floor(this.length / CHUNK_HASHES)
    const off = (this.length & CHUNK_MASK) * HASH_BYTES
    let chunk = this.chunks[c]
    if (chunk === undefined) {
      chunk = new Uint8Array((c === 0 ? FIRST_CHUNK_HASHES : CHUNK_HASHES) * HASH_BYTES)
      this.chunks.push(chunk)
    } else if (off === chunk.length) {
      // only the first chunk starts small (most levels hold few hashes); double it up to full size
      const grown = new Uint8Array(Math.min(chunk.length * 2, CHUNK_HASHES * HASH_BYTES))
      grown.set(chunk)
      this.chunks[c] = chunk = grown
    }
    chunk.set(h, off)
    this.length++
  }

  /** A view (not a copy) of hash i. */
  view(i: number): Uint8Array {
    const chunk = this.chunks[Math.floor(i / CHUNK_HASHES)]!
    const off = (i & CHUNK_MASK) * HASH_BYTES
    return chunk.subarray(off, off + HASH_BYTES)
  }
}

// ---------------------------------------------------------------------------------------------

/** An append-only tree kept in memory with cached perfect-subtree hashes per level, so that
 *  root(size), inclusionProof and consistencyProof for ANY past size are O(log^2 n) or better,
 *  not O(n). append is amortised O(1)..O(log n). Memory ~2 × 32 bytes × leaves. */
export class MerkleTree {
  /** levels[h][i] = hash of the perfect subtree over leaves [i·2^h, (i+1)·2^h). */
  readonly #levels: HashStore[] = [new HashStore()]
  /** Roots of the perfect subtrees the current size decomposes into, largest (leftmost) first. */
  readonly #frontier: Uint8Array[] = []
  #size = 0

  /** Optionally starts with the given leaf hashes appended. */
  constructor(leaves?: Iterable<Hash>) {
    if (leaves) for (const leaf of leaves) this.append(leaf)
  }

  get size(): number {
    return this.#size
  }

  /** Appends a LEAF hash (already leafHash()ed). */
  append(leaf: Hash): void {
    assertHash(leaf, 'MerkleTree.append: leaf')
    const levels = this.#levels
    const frontier = this.#frontier
    levels[0]!.push(leaf)
    let cur: Uint8Array = leaf
    let idx = this.#size
    let h = 0
    while (idx % 2 === 1) {
      cur = hashNode(frontier.pop()!, cur)
      h++
      let level = levels[h]
      if (level === undefined) levels.push((level = new HashStore()))
      level.push(cur)
      idx = (idx - 1) / 2
    }
    frontier.push(cur === leaf ? new Uint8Array(leaf) : cur)
    this.#size++
  }

  /** The leaf hash at `index`. */
  leaf(index: number): Hash {
    this.#checkIndex('leaf', index, this.#size)
    return Buffer.from(this.#levels[0]!.view(index))
  }

  /** MTH of the first `size` leaves (default: all); size 0 → EMPTY_ROOT. */
  root(size: number = this.#size): Hash {
    this.#checkSize('root', size)
    if (size === 0) return Buffer.from(EMPTY_ROOT)
    if (size === this.#size) {
      const f = this.#frontier
      let r = f[f.length - 1]!
      for (let i = f.length - 2; i >= 0; i--) r = hashNode(f[i]!, r)
      return Buffer.from(r)
    }
    return Buffer.from(this.#mth(0, size))
  }

  /** RFC 6962 §2.1.1 PATH(index, D[size]): the audit path, deepest sibling first. */
  inclusionProof(index: number, size: number = this.#size): Hash[] {
    this.#checkSize('inclusionProof', size)
    this.#checkIndex('inclusionProof', index, size)
    const path: Hash[] = []
    let start = 0
    let n = size
    let m = index
    while (n > 1) {
      const k = largestPowerOfTwoBelow(n)
      if (m < k) {
        path.push(this.#mth(start + k, n - k))
        n = k
      } else {
        path.push(this.#mth(start, k))
        start += k
        m -= k
        n -= k
      }
    }
    return path.reverse().map((h) => Buffer.from(h))
  }

  /** RFC 6962 §2.1.2 PROOF(from, D[to]); [] when from = 0 or from = to. */
  consistencyProof(from: number, to: number = this.#size): Hash[] {
    this.#checkSize('consistencyProof', to)
    assertCount(from, 'consistencyProof: from')
    if (from > to) throw new RangeError(`consistencyProof: from (${from}) must not exceed to (${to})`)
    if (from === 0 || from === to) return []
    const proof: Hash[] = []
    let start = 0
    let m = from
    let n = to
    let whole = true // RFC 6962's b: still on the left edge, where MTH(D[m]) is known to the verifier
    while (m !== n) {
      const k = largestPowerOfTwoBelow(n)
      if (m <= k) {
        proof.push(this.#mth(start + k, n - k))
        n = k
      } else {
        proof.push(this.#mth(start, k))
        start += k
        m -= k
        n -= k
        whole = false
      }
    }
    if (!whole) proof.push(this.#mth(start, m))
    return proof.reverse().map((h) => Buffer.from(h))
  }

  /** MTH(D[start : start+n]) for n >= 1; O(log n) for the aligned ranges the RFC recursions produce. May return a view. */
  #mth(start: number, n: number): Uint8Array {
    if (isPowerOfTwo(n) && start % n === 0) {
      return this.#levels[Math.round(Math.log2(n))]!.view(start / n)
    }
    const k = largestPowerOfTwoBelow(n)
    return hashNode(this.#mth(start, k), this.#mth(start + k, n - k))
  }

  #checkSize(what: string, size: unknown): asserts size is number {
    assertCount(size, `${what}: size`)
    if (size > this.#size) throw new RangeError(`${what}: size ${size} exceeds the tree size ${this.#size}`)
  }

  #checkIndex(what: string, index: unknown, size: number): asserts index is number {
    assertCount(index, `${what}: index`)
    if (index >= size) throw new RangeError(`${what}: index ${index} out of range for size ${size} (need index < size)`)
  }
}

// ---------------------------------------------------------------------------------------------
// Verification (RFC 9162). Never throws: anything malformed is simply not a valid proof.

/** RFC 9162 §2.1.3.2 verification: true iff `proof` proves the leaf hash `leaf` (already leafHash()ed) at `index` in a tree of `size` with `root`. */
export function verifyInclusion(leaf: Hash, index: number, size: number, proof: readonly Hash[], root: Hash): boolean {
  if (!isHash(leaf) || !isHash(root) || !Array.isArray(proof)) return false
  if (!isCount(index) || !isCount(size) || index >= size) return false
  let fn = index
  let sn = size - 1
  let r: Uint8Array = leaf
  for (const p of proof) {
    if (sn === 0 || !isHash(p)) return false
    if (fn % 2 === 1 || fn === sn) {
      r = hashNode(p, r)
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = half(fn)
          sn = half(sn)
        }
      }
    } else {
      r = hashNode(r, p)
    }
    fn = half(fn)
    sn = half(sn)
  }
  return sn === 0 && bytesEqual(r, root)
}

/** RFC 9162 §2.1.4.2: true iff proof shows the tree of size `from` with root `fromRoot` is a prefix of size `to` with `toRoot`.
 *  from = to needs an empty proof and equal roots; from = 0 needs an empty proof and fromRoot = EMPTY_ROOT. */
export function verifyConsistency(from: number, to: number, fromRoot: Hash, toRoot: Hash, proof: readonly Hash[]): boolean {
  if (!isHash(fromRoot) || !isHash(toRoot) || !Array.isArray(proof)) return false
  if (!isCount(from) || !isCount(to) || from > to) return false
  if (from === to) return proof.length === 0 && bytesEqual(fromRoot, toRoot)
  if (from === 0) return proof.length === 0 && bytesEqual(fromRoot, EMPTY_ROOT)
  if (proof.length === 0 || proof.length > 128) return false
  for (const p of proof) if (!isHash(p)) return false
  const path: readonly Uint8Array[] = isPowerOfTwo(from) ? [fromRoot, ...proof] : proof
  let fn = from - 1
  let sn = to - 1
  while (fn % 2 === 1) {
    fn = half(fn)
    sn = half(sn)
  }
  let fr = path[0]!
  let sr = fr
  for (let i = 1; i < path.length; i++) {
    const c = path[i]!
    if (sn === 0) return false
    if (fn % 2 === 1 || fn === sn) {
      fr = hashNode(c, fr)
      sr = hashNode(c, sr)
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = half(fn)
          sn = half(sn)
        }
      }
    } else {
      sr = hashNode(sr, c)
    }
    fn = half(fn)
    sn = half(sn)
  }
  return sn === 0 && bytesEqual(fr, fromRoot) && bytesEqual(sr, toRoot)
}

// ---------------------------------------------------------------------------------------------

/** Streaming root computation for verifiers: O(log n) memory, feed leaf hashes in order, ask the root at any point. */
export class MerkleFrontier {
  /** Roots of the perfect subtrees the current size decomposes into, largest (leftmost) first. */
  readonly #stack: Uint8Array[] = []
  #size = 0

  get size(): number {
    return this.#size
  }

  /** Appends a LEAF hash (already leafHash()ed). */
  push(leaf: Hash): void {
    assertHash(leaf, 'MerkleFrontier.push: leaf')
    const stack = this.#stack
    let cur: Uint8Array = leaf
    let idx = this.#size
    while (idx % 2 === 1) {
      cur = hashNode(stack.pop()!, cur)
      idx = (idx - 1) / 2
    }
    stack.push(cur === leaf ? new Uint8Array(leaf) : cur)
    this.#size++
  }

  /** MTH of all leaves pushed so far (EMPTY_ROOT when none). */
  root(): Hash {
    const s = this.#stack
    if (s.length === 0) return Buffer.from(EMPTY_ROOT)
    let r = s[s.length - 1]!
    for (let i = s.length - 2; i >= 0; i--) r = hashNode(s[i]!, r)
    return Buffer.from(r)
  }
}
