import {execFileSync} from 'node:child_process'

import {describe, expect, it} from 'vitest'

import {parseImageRef, RegistryClient} from '../../src/hq/registry/oci.js'

const REGISTRY = process.env.JIL_TEST_REGISTRY
const IMAGE = process.env.JIL_TEST_IMAGE
const DIGEST = process.env.JIL_TEST_IMAGE_DIGEST
if (!REGISTRY && process.env.CI) throw new Error('JIL_TEST_REGISTRY is not set: run `eval "$(scripts/test-services.sh env)"` first')

describe('image references', () => {
  it('reads REGISTRY/NAME[:TAG|@DIGEST]', () => {
    expect(parseImageRef('127.0.0.1:5000/jil/busybox:test')).toEqual({registry: '127.0.0.1:5000', repository: 'jil/busybox', tag: 'test'})
    expect(parseImageRef(`registry.example.com/jil/wallet-api@sha256:${'a'.repeat(64)}`)).toEqual({registry: 'registry.example.com', repository: 'jil/wallet-api', digest: `sha256:${'a'.repeat(64)}`})
    expect(parseImageRef('localhost/jil/x')).toEqual({registry: 'localhost', repository: 'jil/x'})
    for (const bad of ['busybox', 'jil/busybox:test', 'Registry.example.com/X', '127.0.0.1:5000/jil/x@sha256:abc', '']) {
      expect(() => parseImageRef(bad), bad).toThrow(expect.objectContaining({code: 'IMAGE_REF_INVALID'}))
    }
  })
})

describe.runIf(REGISTRY)('the OCI registry client, against a real registry', () => {
  it('resolves a tag to the digest the registry reports, and lists its inventory', async () => {
    const ref = parseImageRef(IMAGE!)
    const client = await RegistryClient.for(ref.registry)
    expect(await client.resolve(ref.repository, ref.tag!)).toBe(DIGEST)
    // The same digest the registry's own HEAD reports (checked with curl, outside our code).
    const head = execFileSync('curl', ['-sI', '-H', 'Accept: application/vnd.docker.distribution.manifest.v2+json', '-H', 'Accept: application/vnd.oci.image.manifest.v1+json', `http://${REGISTRY}/v2/${ref.repository}/manifests/${ref.tag}`], {encoding: 'utf8'})
    expect(head.toLowerCase()).toContain(`docker-content-digest: ${DIGEST}`)
    expect(await client.resolve(ref.repository, DIGEST!)).toBe(DIGEST)
    expect(await client.repositories()).toContain(ref.repository)
    expect(await client.tags(ref.repository)).toContain(ref.tag)
    expect(await client.inventory()).toContainEqual({repository: ref.repository, tag: ref.tag, digest: DIGEST})
    await expect(client.resolve(ref.repository, 'no-such-tag')).rejects.toMatchObject({code: 'IMAGE_NOT_FOUND'})
    await expect(new RegistryClient('127.0.0.1:1').resolve('x/y', 'z')).rejects.toMatchObject({code: 'REGISTRY_UNREACHABLE'})
  })
})
