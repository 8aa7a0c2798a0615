import {createHash} from 'node:crypto'

import {describe, expect, it} from 'vitest'

import {
  EMPTY_ROOT,
  type Hash,
  leafHash,
  MerkleFrontier,
  MerkleTree,
  nodeHash,
  rootOf,
  fromHex,
  toHex,
  verifyConsistency,
  verifyInclusion,
} from '../../src/shared/merkle.js'

// ---- helpers -------------------------------------------------------------------------------

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest()
const hexes = (hs: readonly Hash[]): string[] => hs.map(toHex)

/** Leaf hashes of n synthetic ledger entries (entry hash = SHA-256 of a label). */
function leaves(n: number): Hash[] {
  return Array.from({length: n}, (_, i) => leafHash(sha256(`entry-${i}`)))
}

function build(ls: readonly Hash[]): MerkleTree {
  const t = new MerkleTree()
  for (const l of ls) t.append(l)
  return t
}

/** A copy of h with one bit flipped. */
function flip(h: Hash, byte = 0): Hash {
  const c = new Uint8Array(h)
  c[byte % c.length]! ^= 0x01
  return c
}

/** Deterministic PRNG (mulberry32), so that samples are reproducible. */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n)
  }
}

// Straight transcriptions of RFC 6962 §2.1.1 and §2.1.2, over slices: the reference the cached tree must match.
function k(n: number): number {
  let p = 1
  while (p * 2 < n) p *= 2
  return p
}
function refPath(m: number, d: readonly Hash[]): Hash[] {
  const n = d.length
  if (n === 1) return []
  const kk = k(n)
  return m < kk
    ? [...refPath(m, d.slice(0, kk)), rootOf(d.slice(kk))]
    : [...refPath(m - kk, d.slice(kk)), rootOf(d.slice(0, kk))]
}
function refSubproof(m: number, d: readonly Hash[], b: boolean): Hash[] {
  const n = d.length
  if (m === n) return b ? [] : [rootOf(d)]
  const kk = k(n)
  return m <= kk
    ? [...refSubproof(m, d.slice(0, kk), b), rootOf(d.slice(kk))]
    : [...refSubproof(m - kk, d.slice(kk), false), rootOf(d.slice(0, kk))]
}
const refProof = (m: number, d: readonly Hash[]): Hash[] => (m === 0 ? [] : refSubproof(m, d, true))

/** The left/right pattern of PATH(i, D[n]): which side each sibling is on, deepest first. */
function sides(i: number, n: number): string {
  if (n === 1) return ''
  const kk = k(n)
  return i < kk ? `${sides(i, kk)}R` : `${sides(i - kk, n - kk)}L`
}
/** The same for PROOF(m, D[n]), with S for a leading MTH(D[m]). */
function consistencyShape(m: number, n: number, b = true): string {
  if (m === 0) return ''
  if (m === n) return b ? '' : 'S'
  const kk = k(n)
  return m <= kk ? `${consistencyShape(m, kk, b)}R` : `${consistencyShape(m - kk, n - kk, false)}L`
}

/** Asserts the inclusion proof for (i, m) is the RFC's, verifies, and fails under every tampering. */
function checkInclusion(t: MerkleTree, ls: readonly Hash[], roots: readonly Hash[], i: number, m: number, exhaustive: boolean): void {
  const leaf = ls[i]!
  const root = roots[m]!
  const proof = t.inclusionProof(i, m)
  expect(hexes(proof)).toEqual(hexes(refPath(i, ls.slice(0, m))))
  expect(verifyInclusion(leaf, i, m, proof, root)).toBe(true)
  // wrong leaf (a flipped bit, or another leaf)
  expect(verifyInclusion(flip(leaf), i, m, proof, root)).toBe(false)
  if (m > 1) expect(verifyInclusion(ls[(i + 1) % m]!, i, m, proof, root)).toBe(false)
  // wrong root
  expect(verifyInclusion(leaf, i, m, proof, flip(root, 31))).toBe(false)
  // wrong index
  const indexes = exhaustive ? Array.from({length: m + 2}, (_, j) => j) : [i - 1, i + 1, i ^ 2, 0, m - 1, m]
  for (const j of indexes) if (j !== i && j >= 0) expect(verifyInclusion(leaf, j, m, proof, root)).toBe(false)
  // wrong size: never against that size's real root; against this root only when the path has the
  // very same shape (RFC 9162 binds the size through the root, so e.g. leaf 0's path in trees of 5 and
  // 6 leaves are alike in shape: then the same hashes do give the same root)
  const sizes = exhaustive ? Array.from({length: roots.length + 3}, (_, s) => s) : [m - 1, m + 1, m * 2, Math.floor(m / 2)]
  for (const s of sizes) {
    if (s === m || s < 0) continue
    const alike = s > i && sides(i, s) === sides(i, m)
    expect(verifyInclusion(leaf, i, s, proof, root), `index ${i}, size ${s} for ${m}`).toBe(alike)
    if (s < roots.length) expect(verifyInclusion(leaf, i, s, proof, roots[s]!)).toBe(false)
  }
  // one proof element changed, or the proof cut, extended, or carrying a malformed element
  proof.forEach((_, e) => {
    const bad = proof.slice()
    bad[e] = flip(proof[e]!, e)
    expect(verifyInclusion(leaf, i, m, bad, root)).toBe(false)
  })
  if (proof.length > 0) {
    expect(verifyInclusion(leaf, i, m, proof.slice(0, -1), root)).toBe(false)
    expect(verifyInclusion(leaf, i, m, proof.slice(1), root)).toBe(false)
    expect(verifyInclusion(leaf, i, m, [...proof.slice(0, -1), proof.at(-1)!.subarray(0, 31)], root)).toBe(false)
  }
  expect(verifyInclusion(leaf, i, m, [...proof, root], root)).toBe(false)
  expect(verifyInclusion(leaf, i, m, [root, ...proof], root)).toBe(false)
  expect(verifyInclusion(leaf, i, m, [...proof, new Uint8Array(0)], root)).toBe(false)
}

/** Asserts the consistency proof for (m, n) is the RFC's, verifies, and fails under every tampering. */
function checkConsistency(t: MerkleTree, ls: readonly Hash[], roots: readonly Hash[], m: number, n: number, exhaustive: boolean): void {
  const r1 = roots[m]!
  const r2 = roots[n]!
  const proof = t.consistencyProof(m, n)
  expect(hexes(proof)).toEqual(hexes(refProof(m, ls.slice(0, n))))
  expect(verifyConsistency(m, n, r1, r2, proof)).toBe(true)
  // wrong roots
  expect(verifyConsistency(m, n, flip(r1, 7), r2, proof)).toBe(false)
  // (the empty tree is a prefix of every tree: from = 0 says nothing about the later root)
  expect(verifyConsistency(m, n, r1, flip(r2, 9), proof)).toBe(m === 0 && n > 0)
  if (m !== n) expect(verifyConsistency(m, n, r2, r1, proof)).toBe(false)
  // wrong sizes, against these roots or against the other sizes' real roots
  // (as for inclusion, a proof carries over to other sizes exactly when its shape does; the trivial
  // empty proofs of m = 0 and m = n are checked against roots instead)
  const shape = consistencyShape(m, n)
  const froms = exhaustive ? Array.from({length: roots.length + 3}, (_, s) => s) : [m - 1, m + 1, m ^ 2, 0, n]
  for (const f of froms) {
    if (f === m || f < 0) continue
    if (proof.length > 0) {
      const alike = f <= n && consistencyShape(f, n) === shape
      expect(verifyConsistency(f, n, r1, r2, proof), `from ${f} for ${m}, to ${n}`).toBe(alike)
    }
    if (f < roots.length && f <= n) expect(verifyConsistency(f, n, roots[f]!, r2, proof)).toBe(proof.length === 0 && (f === 0 || f === n))
  }
  const tos = exhaustive ? Array.from({length: roots.length + 3}, (_, s) => s) : [n - 1, n + 1, n * 2, Math.floor(n / 2), m]
  for (const s of tos) {
    if (s === n || s < 0) continue
    if (proof.length > 0) {
      const alike = s >= m && consistencyShape(m, s) === shape
      expect(verifyConsistency(m, s, r1, r2, proof), `from ${m}, to ${s} for ${n}`).toBe(alike)
    }
    if (s < roots.length && s >= m) expect(verifyConsistency(m, s, r1, roots[s]!, proof)).toBe(m === 0)
  }
  // one proof element changed, or the proof cut, extended, or carrying a malformed element
  proof.forEach((_, e) => {
    const bad = proof.slice()
    bad[e] = flip(proof[e]!, e + 3)
    expect(verifyConsistency(m, n, r1, r2, bad)).toBe(false)
  })
  if (proof.length > 0) {
    expect(verifyConsistency(m, n, r1, r2, [])).toBe(false)
    expect(verifyConsistency(m, n, r1, r2, proof.slice(0, -1))).toBe(false)
    expect(verifyConsistency(m, n, r1, r2, proof.slice(1))).toBe(false)
    expect(verifyConsistency(m, n, r1, r2, [proof[0]!, ...proof])).toBe(false)
    expect(verifyConsistency(m, n, r1, r2, [...proof.slice(0, -1), proof.at(-1)!.subarray(1)])).toBe(false)
  }
  expect(verifyConsistency(m, n, r1, r2, [...proof, r2])).toBe(false)
  expect(verifyConsistency(m, n, r1, r2, [...proof, new Uint8Array(0)])).toBe(false)
}

// ---- tests ---------------------------------------------------------------------------------

describe('RFC 6962 hashing', () => {
  it('hashes the empty tree to SHA-256 of the empty string', () => {
    expect(toHex(EMPTY_ROOT)).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    expect(toHex(rootOf([]))).toBe(toHex(EMPTY_ROOT))
    expect(toHex(new MerkleTree().root())).toBe(toHex(EMPTY_ROOT))
    expect(toHex(new MerkleFrontier().root())).toBe(toHex(EMPTY_ROOT))
  })

  it('domain-separates leaves (0x00) from interior nodes (0x01)', () => {
    const a = sha256('a')
    const b = sha256('b')
    expect(toHex(leafHash(a))).toBe(toHex(createHash('sha256').update(Buffer.from([0])).update(a).digest()))
    expect(toHex(nodeHash(a, b))).toBe(toHex(createHash('sha256').update(Buffer.from([1])).update(a).update(b).digest()))
    // non-32-byte leaf data goes through the general path and agrees with it
    const raw = Buffer.from('x'.repeat(100))
    expect(toHex(leafHash(raw))).toBe(toHex(createHash('sha256').update(Buffer.from([0])).update(raw).digest()))
    // a leaf hash of a 64-byte value is not the node hash of its halves (second-preimage resistance)
    expect(toHex(leafHash(Buffer.concat([a, b])))).not.toBe(toHex(nodeHash(a, b)))
  })

  it('rejects malformed hashes', () => {
    expect(() => nodeHash(new Uint8Array(31), new Uint8Array(32))).toThrow(RangeError)
    expect(() => nodeHash(new Uint8Array(32), 'x' as unknown as Hash)).toThrow(TypeError)
    expect(() => rootOf([new Uint8Array(33)])).toThrow(RangeError)
    expect(() => new MerkleTree().append(new Uint8Array(16))).toThrow(RangeError)
    expect(() => new MerkleFrontier().push(new Uint8Array(0))).toThrow(RangeError)
  })

  it('round-trips hex', () => {
    const h = sha256('hex')
    expect(toHex(fromHex(toHex(h)))).toBe(toHex(h))
    expect(toHex(fromHex(toHex(h).toUpperCase()))).toBe(toHex(h))
    expect(() => fromHex('abc')).toThrow(RangeError)
    expect(() => fromHex('zz'.repeat(32))).toThrow(RangeError)
  })
})

describe('Certificate Transparency reference vectors', () => {
  // The 8 leaf inputs and the roots, audit paths and consistency proofs of the CT reference
  // implementations' merkle tests (certificate-transparency, certificate-transparency-go).
  const DATA = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((h) =>
    Buffer.from(h, 'hex'),
  )
  const ROOTS = [
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
    'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
    '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
    'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
    '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
  ]
  const ls = DATA.map(leafHash)
  const tree = build(ls)

  it('has the published roots for sizes 0..8', () => {
    const frontier = new MerkleFrontier()
    expect(toHex(tree.root(0))).toBe(ROOTS[0])
    ls.forEach((l, i) => {
      frontier.push(l)
      expect(toHex(tree.root(i + 1))).toBe(ROOTS[i + 1])
      expect(toHex(rootOf(ls.slice(0, i + 1)))).toBe(ROOTS[i + 1])
      expect(toHex(frontier.root())).toBe(ROOTS[i + 1])
    })
    expect(toHex(tree.root())).toBe(ROOTS[8])
  })

  it('has the published audit paths', () => {
    const cases: Array<[number, number, string[]]> = [
      [0, 8, ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4']],
      [5, 8, ['bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']],
      [2, 3, ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125']],
      [1, 5, ['6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b']],
      [0, 1, []],
    ]
    for (const [index, size, path] of cases) {
      expect(hexes(tree.inclusionProof(index, size))).toEqual(path)
      expect(verifyInclusion(ls[index]!, index, size, path.map(fromHex), fromHex(ROOTS[size]!))).toBe(true)
    }
  })

  it('has the published consistency proofs', () => {
    const cases: Array<[number, number, string[]]> = [
      [1, 8, ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4']],
      [6, 8, ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']],
      [2, 5, ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b']],
      [1, 1, []],
    ]
    for (const [from, to, proof] of cases) {
      expect(hexes(tree.consistencyProof(from, to))).toEqual(proof)
      expect(verifyConsistency(from, to, fromHex(ROOTS[from]!), fromHex(ROOTS[to]!), proof.map(fromHex))).toBe(true)
    }
  })
})

describe('MerkleTree against the RFC definitions', () => {
  const SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 1000]

  for (const N of SIZES) {
    describe(`a tree of ${N} leaves`, () => {
      const ls = leaves(N)
      const tree = build(ls)
      const roots = Array.from({length: N + 1}, (_, m) => rootOf(ls.slice(0, m)))
      const exhaustive = N <= 17

      it('knows its size and leaves', () => {
        expect(tree.size).toBe(N)
        for (let i = 0; i < N; i++) expect(toHex(tree.leaf(i))).toBe(toHex(ls[i]!))
        expect(() => tree.leaf(N)).toThrow(RangeError)
      })

      it('has the naive root at every prefix size', () => {
        for (let m = 0; m <= N; m++) expect(toHex(tree.root(m)), `root(${m})`).toBe(toHex(roots[m]!))
        expect(toHex(tree.root())).toBe(toHex(roots[N]!))
      })

      it('grows its root step by step like the streaming frontier', () => {
        const grown = new MerkleTree()
        const frontier = new MerkleFrontier()
        expect(toHex(frontier.root())).toBe(toHex(grown.root()))
        for (let i = 0; i < N; i++) {
          grown.append(ls[i]!)
          frontier.push(ls[i]!)
          expect(frontier.size).toBe(i + 1)
          const r = toHex(grown.root())
          expect(r).toBe(toHex(roots[i + 1]!))
          expect(toHex(frontier.root())).toBe(r)
        }
      })

      it('issues inclusion proofs that verify, and fail when tampered with', () => {
        if (exhaustive) {
          for (let m = 1; m <= N; m++) for (let i = 0; i < m; i++) checkInclusion(tree, ls, roots, i, m, true)
        } else {
          const rand = rng(N)
          const pairs: Array<[number, number]> = [[0, N], [N - 1, N], [0, 1], [511, 512], [512, 513], [N - 1, N - 1 + 1]]
          for (let s = 0; s < 150; s++) {
            const m = 1 + rand(N)
            pairs.push([rand(m), m], [rand(N), N])
          }
          for (const [i, m] of pairs) checkInclusion(tree, ls, roots, i, m, false)
        }
      })

      it('issues consistency proofs that verify, and fail when tampered with', () => {
        if (exhaustive) {
          for (let n = 0; n <= N; n++) for (let m = 0; m <= n; m++) checkConsistency(tree, ls, roots, m, n, true)
        } else {
          const rand = rng(N + 1)
          const pairs: Array<[number, number]> = [[1, N], [N - 1, N], [512, N], [511, 512], [513, 1000], [0, N], [N, N], [3, 7]]
          for (let s = 0; s < 150; s++) {
            const n = rand(N + 1)
            pairs.push([rand(n + 1), n], [rand(N + 1), N])
          }
          for (const [m, n] of pairs) checkConsistency(tree, ls, roots, m, n, false)
        }
      })

      it('answers for past sizes after further appends without changing', () => {
        const more = build([...ls, ...leaves(N + 5).slice(N)])
        for (let m = 0; m <= N; m += Math.max(1, Math.floor(N / 20))) {
          expect(toHex(more.root(m))).toBe(toHex(roots[m]!))
          if (m > 0) expect(hexes(more.inclusionProof(m - 1, m))).toEqual(hexes(tree.inclusionProof(m - 1, m)))
          expect(hexes(more.consistencyProof(Math.floor(m / 2), m))).toEqual(hexes(tree.consistencyProof(Math.floor(m / 2), m)))
        }
      })
    })
  }
})

describe('argument checking', () => {
  const tree = build(leaves(5))
  const r = tree.root()

  it('throws RangeError on bad sizes and indexes', () => {
    expect(() => tree.root(6)).toThrow(/exceeds the tree size 5/)
    expect(() => tree.root(-1)).toThrow(RangeError)
    expect(() => tree.root(1.5)).toThrow(RangeError)
    expect(() => tree.root(Number.NaN)).toThrow(RangeError)
    expect(() => tree.inclusionProof(5)).toThrow(/index 5 out of range/)
    expect(() => tree.inclusionProof(2, 2)).toThrow(RangeError)
    expect(() => tree.inclusionProof(0, 0)).toThrow(RangeError)
    expect(() => tree.inclusionProof(0, 6)).toThrow(RangeError)
    expect(() => tree.inclusionProof(-1)).toThrow(RangeError)
    expect(() => tree.consistencyProof(4, 3)).toThrow(/must not exceed/)
    expect(() => tree.consistencyProof(6)).toThrow(RangeError)
    expect(() => tree.consistencyProof(1, 6)).toThrow(RangeError)
    expect(() => tree.consistencyProof(-1, 3)).toThrow(RangeError)
    expect(() => tree.leaf(-1)).toThrow(RangeError)
    expect(tree.consistencyProof(0)).toEqual([])
    expect(tree.consistencyProof(5)).toEqual([])
  })

  it('hands out copies, so callers cannot corrupt the tree', () => {
    const leaf0 = tree.leaf(0)
    const before = toHex(leaf0)
    leaf0.fill(0)
    tree.inclusionProof(0)[0]!.fill(0)
    tree.root().fill(0)
    expect(toHex(tree.leaf(0))).toBe(before)
    expect(toHex(tree.root())).toBe(toHex(r))
    expect(verifyInclusion(tree.leaf(0), 0, 5, tree.inclusionProof(0), r)).toBe(true)
    // nor by mutating what they appended
    const l = sha256('mutable')
    const t2 = new MerkleTree()
    const f2 = new MerkleFrontier()
    t2.append(l)
    f2.push(l)
    const root1 = toHex(t2.root())
    l.fill(7)
    expect(toHex(t2.root())).toBe(root1)
    expect(toHex(f2.root())).toBe(root1)
  })

  it('never throws from the verifiers, only returns false', () => {
    const leaf = tree.leaf(2)
    const proof = tree.inclusionProof(2)
    const junk = [undefined, null, 'x', 3, {}, new Uint8Array(31)] as unknown as Hash[]
    for (const j of junk) {
      expect(verifyInclusion(j, 2, 5, proof, r)).toBe(false)
      expect(verifyInclusion(leaf, 2, 5, proof, j)).toBe(false)
      expect(verifyInclusion(leaf, 2, 5, [j, ...proof.slice(1)], r)).toBe(false)
      expect(verifyConsistency(2, 5, j, r, tree.consistencyProof(2))).toBe(false)
      expect(verifyConsistency(2, 5, tree.root(2), j, tree.consistencyProof(2))).toBe(false)
      expect(verifyConsistency(2, 5, tree.root(2), r, [j])).toBe(false)
    }
    for (const [i, n] of [[-1, 5], [5, 5], [2, -5], [2.5, 5], [2, 5.5], [Number.NaN, 5], [2, Infinity], [0, 0]] as const) {
      expect(verifyInclusion(leaf, i, n, proof, r)).toBe(false)
    }
    expect(verifyInclusion(leaf, 2, 5, null as unknown as Hash[], r)).toBe(false)
    expect(verifyConsistency(2, 5, tree.root(2), r, 'nope' as unknown as Hash[])).toBe(false)
    expect(verifyConsistency(3, 2, r, r, [])).toBe(false)
    expect(verifyConsistency(-1, 2, r, r, [])).toBe(false)
    expect(verifyConsistency(2, Number.NaN, r, r, [])).toBe(false)
    // from = 0 proves nothing but needs the empty root; from = to needs equal roots and no proof
    expect(verifyConsistency(0, 5, EMPTY_ROOT, r, [])).toBe(true)
    expect(verifyConsistency(0, 5, r, r, [])).toBe(false)
    expect(verifyConsistency(0, 5, EMPTY_ROOT, r, [r])).toBe(false)
    expect(verifyConsistency(5, 5, r, r, [])).toBe(true)
    expect(verifyConsistency(5, 5, r, r, [r])).toBe(false)
    // absurdly long proofs are rejected outright
    expect(verifyInclusion(leaf, 2, 5, Array.from({length: 10_000}, () => r), r)).toBe(false)
    expect(verifyConsistency(2, 5, tree.root(2), r, Array.from({length: 10_000}, () => r))).toBe(false)
  })

  it('handles sizes beyond 2^32 in the verifiers', () => {
    // a proof for the last leaf of a tree of 2^33 + 1 leaves is the root of the first 2^33 leaves;
    // the arithmetic must not wrap at 32 bits
    const left = sha256('left 2^33')
    const leaf = sha256('leaf')
    const root = nodeHash(left, leaf)
    expect(verifyInclusion(leaf, 2 ** 33, 2 ** 33 + 1, [left], root)).toBe(true)
    expect(verifyInclusion(leaf, 1, 2, [left], root)).toBe(true)
    expect(verifyInclusion(leaf, 2 ** 33, 2 ** 33 + 2, [left], root)).toBe(false)
    expect(verifyConsistency(2 ** 33, 2 ** 33 + 1, left, root, [leaf])).toBe(true)
    expect(verifyConsistency(2 ** 33, 2 ** 33 + 1, left, root, [left])).toBe(false)
  })
})
