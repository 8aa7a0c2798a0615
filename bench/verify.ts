// Manifest verification throughput (issue 5's benchmark):
//  - Ed25519 manifest signatures verified per second, noble (verifyEd25519, async, pure JS) vs
//    node:crypto (verifyEd25519Sync, OpenSSL), N distinct signed manifests each: the signature check
//    alone over manifestSigningBytes, and for node:crypto also the whole verifyManifest (devnet
//    policy: key lookup, shape, canonical JSON, signature, policy checks);
//  - SHA-256 throughput of a digest check: a blob hashed with createHash('sha256') fed in 1 MiB chunks,
//    as a registry blob is streamed (anchor in the issue: 1.57 GB/s per core).
//
//   npm run bench -- verify [--manifests N] [--mb M]
import {createHash, randomBytes} from 'node:crypto'

import {manifestSigningBytes, signManifest, verifyEd25519Sync, verifyManifest, type ImageManifest} from '../src/shared/manifest.js'
import {fileSigner, generateEd25519Key, verifyEd25519} from '../src/shared/signing.js'

const argv = process.argv.slice(2)
const opt = (name: string, d: number) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? Number(argv[i + 1]) : d
}
const N = opt('manifests', 5000)
const MB = opt('mb', 200)
const emit = (metric: string, value: number, unit: string) => process.stdout.write(JSON.stringify({bench: 'verify', metric, value, unit}) + '\n')
const note = (s: string) => process.stderr.write(`verify: ${s}\n`)

const key = await generateEd25519Key()
const signer = await fileSigner(key.privatePem)
note(`signing ${N} manifests`)
const manifests: ImageManifest[] = []
for (let i = 0; i < N; i++) {
  manifests.push(
    await signManifest(
      {
        image: `jil/svc-${i % 190}`,
        repository: `127.0.0.1:5000/jil/svc-${i % 190}`,
        digest: 'sha256:' + createHash('sha256').update(String(i)).digest('hex'),
        version: `v95.${i}`,
        track: 'devnet',
        commit: createHash('sha1').update(String(i)).digest('hex').slice(0, 12),
        created_at: new Date(1_795_000_000_000 + i * 1000).toISOString(),
      },
      signer,
    ),
  )
}
// What a verifier has in hand: message bytes and signature per manifest.
const prepared = manifests.map((m) => ({msg: manifestSigningBytes(m), sig: new Uint8Array(Buffer.from(m.signature, 'base64'))}))

function rate(count: number, ms: number): number {
  return Math.round(count / (ms / 1000))
}

// Warm both paths up (JIT, noble's precomputed tables, OpenSSL key parse cache).
for (const p of prepared.slice(0, 200)) {
  if (!(await verifyEd25519(p.sig, p.msg, signer.publicKey))) throw new Error('noble refused a valid signature')
  if (!verifyEd25519Sync(p.sig, p.msg, key.publicPem)) throw new Error('node:crypto refused a valid signature')
}

{
  const t0 = performance.now()
  let ok = 0
  for (const p of prepared) if (await verifyEd25519(p.sig, p.msg, signer.publicKey)) ok++
  const ms = performance.now() - t0
  if (ok !== N) throw new Error('noble refused a valid signature')
  emit(`manifest signatures verified, noble (async, sequential), ${N} manifests`, rate(N, ms), '1/s')
}
{
  const t0 = performance.now()
  const results = await Promise.all(prepared.map((p) => verifyEd25519(p.sig, p.msg, signer.publicKey)))
  const ms = performance.now() - t0
  if (results.some((r) => !r)) throw new Error('noble refused a valid signature')
  emit(`manifest signatures verified, noble (async, all in flight), ${N} manifests`, rate(N, ms), '1/s')
}
{
  const t0 = performance.now()
  let ok = 0
  for (const p of prepared) if (verifyEd25519Sync(p.sig, p.msg, key.publicPem)) ok++
  const ms = performance.now() - t0
  if (ok !== N) throw new Error('node:crypto refused a valid signature')
  emit(`manifest signatures verified, node:crypto (sync), ${N} manifests`, rate(N, ms), '1/s')
}
{
  const trust = {keys: [{key_id: key.keyId, public_key: key.publicPem}], caPem: '', isRevoked: () => false}
  const t0 = performance.now()
  for (const m of manifests) {
    const r = verifyManifest(m, trust, {track: 'devnet', minApprovals: 0})
    if (!r.ok) throw new Error(`verifyManifest refused a valid manifest: ${r.code} ${r.message}`)
  }
  const ms = performance.now() - t0
  emit(`verifyManifest, whole (devnet, node:crypto), ${N} manifests`, rate(N, ms), '1/s')
}

// SHA-256 digest check over a blob, 1 MiB at a time.
{
  const CHUNK = 1 << 20
  const blob = randomBytes(MB * 1_000_000)
  const expected = createHash('sha256').update(blob).digest('hex') // also warms up
  const runs = 3
  let best = Infinity
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now()
    const h = createHash('sha256')
    for (let off = 0; off < blob.length; off += CHUNK) h.update(blob.subarray(off, Math.min(off + CHUNK, blob.length)))
    const digest = h.digest('hex')
    const ms = performance.now() - t0
    if (digest !== expected) throw new Error('digest differs')
    best = Math.min(best, ms)
  }
  emit(`sha-256 digest check, ${MB} MB blob in 1 MiB chunks (best of ${runs})`, Math.round(MB / (best / 1000)), 'MB/s')
}
