import {createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify} from 'node:crypto'

import {describe, expect, it} from 'vitest'

import {fileSigner, generateEd25519Key, keyIdOf, parseEd25519PublicPem, verifyEd25519} from '../../src/shared/signing.js'

describe('the Ed25519 image-signing key', () => {
  it('is a PKCS#8 key that node:crypto (OpenSSL) reads and agrees with', async () => {
    const k = await generateEd25519Key()
    const signer = await fileSigner(k.privatePem)
    const msg = new TextEncoder().encode('{"digest":"sha256:00"}')
    const sig = await signer.sign(msg)
    expect(sig).toHaveLength(64)
    // OpenSSL verifies noble's signature and signs the same bytes (Ed25519 is deterministic).
    expect(nodeVerify(null, msg, createPublicKey(k.publicPem), sig)).toBe(true)
    expect(Buffer.from(nodeSign(null, msg, createPrivateKey(k.privatePem)))).toEqual(Buffer.from(sig))
    expect(await verifyEd25519(sig, msg, signer.publicKey)).toBe(true)
    const tampered = Uint8Array.from(msg)
    tampered[0] = tampered[0]! ^ 1
    expect(await verifyEd25519(sig, tampered, signer.publicKey)).toBe(false)
  })

  it('has key id = first 16 hex of sha256(raw public key)', async () => {
    const k = await generateEd25519Key()
    const pub = parseEd25519PublicPem(k.publicPem)
    expect(k.keyId).toBe(createHash('sha256').update(pub).digest('hex').slice(0, 16))
    expect(keyIdOf(pub)).toBe(k.keyId)
    expect((await fileSigner(k.privatePem)).keyId).toBe(k.keyId)
  })

  it('refuses keys that are not Ed25519', async () => {
    const {generateKeyPairSync} = await import('node:crypto')
    const ec = generateKeyPairSync('ec', {namedCurve: 'P-256'}).privateKey.export({type: 'pkcs8', format: 'pem'}) as string
    await expect(fileSigner(ec)).rejects.toMatchObject({code: 'KEY_INVALID'})
    await expect(fileSigner('nonsense')).rejects.toMatchObject({code: 'KEY_INVALID'})
    const ecPub = generateKeyPairSync('ec', {namedCurve: 'P-256'}).publicKey.export({type: 'spki', format: 'pem'}) as string
    expect(() => parseEd25519PublicPem(ecPub)).toThrow(expect.objectContaining({code: 'KEY_INVALID'}))
  })
})
