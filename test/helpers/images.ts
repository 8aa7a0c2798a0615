import {execFile} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {promisify} from 'node:util'
import {gzipSync} from 'node:zlib'

import {pushImage, sha256} from '../../src/dev/image.js'
import type {UserBundle} from '../../src/shared/bundle.js'
import type {ImageManifest} from '../../src/shared/manifest.js'
import type {DesiredService} from '../../src/shared/stack.js'
import {userClient} from './node.js'

const exec = promisify(execFile)

/** The Docker CLI against the test engine (the test-services script's DOCKER_HOST). */
export async function docker(...args: string[]): Promise<string> {
  const host = process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST
  const {stdout} = await exec('docker', args, {env: {...process.env, ...(host ? {DOCKER_HOST: host} : {})}, maxBuffer: 16 * 1024 * 1024})
  return stdout.trim()
}

/** The busybox test image the test-services script pushed: `127.0.0.1:PORT/jil/busybox` and its registry digest. */
export function testBaseImage(): {registry: string; repository: string; digest: string} {
  const image = process.env.JIL_TEST_IMAGE
  const digest = process.env.JIL_TEST_IMAGE_DIGEST
  if (!image || !digest) throw new Error('JIL_TEST_IMAGE is not set: run `eval "$(scripts/test-services.sh env)"` first')
  const repository = image.replace(/:[^:/]+$/, '')
  return {registry: repository.split('/')[0]!, repository, digest}
}

export type TestImage = {
  /** Image name as manifests carry it: `jil/busybox`. */
  image: string
  /** `127.0.0.1:PORT/jil/busybox`. */
  repository: string
  tag: string
  /** The registry's manifest digest (RepoDigests). */
  digest: string
}

/**
 * A new digest in the test registry: the busybox image plus a unique marker file (and `/ready`
 * unless `ready: false`, for health checks like `test -f /ready`), committed, tagged uniquely, pushed.
 * With `local: false` the engine forgets it again, so whoever runs it must pull it by digest.
 */
export async function makeTestImage(o: {name?: string; ready?: boolean; local?: boolean} = {}): Promise<TestImage> {
  const base = testBaseImage()
  const baseRef = `${base.repository}@${base.digest}`
  // Other tests prune and untag: fetch the base by digest when the engine lost it.
  await docker('image', 'inspect', baseRef).catch(() => docker('pull', baseRef))
  const image = o.name ?? 'jil/busybox'
  const repository = `${base.registry}/${image}`
  const tag = `t-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`
  const marker = randomBytes(8).toString('hex')
  const script = `echo ${marker} > /marker${o.ready === false ? '' : ' && touch /ready'}`
  const cid = await docker('create', '--network', 'none', '--label', 'jil.test=image-build', baseRef, 'sh', '-c', script)
  try {
    await docker('start', '-a', cid)
    await docker('commit', '--change', 'CMD ["/bin/sh"]', cid, `${repository}:${tag}`)
  } finally {
    await docker('rm', '-f', cid)
  }
  await docker('push', `${repository}:${tag}`)
  const digests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', `${repository}:${tag}`)) as string[]
  const digest = digests.find((d) => d.startsWith(`${repository}@`))?.split('@')[1]
  if (!digest) throw new Error(`pushed ${repository}:${tag} but the engine reports no registry digest (${digests.join(', ')})`)
  if (o.local === false) await forgetImage(repository, digest, tag)
  return {image, repository, tag, digest}
}

/** Removes an image from the test engine (not from the registry), so the next use pulls it. */
export async function forgetImage(repository: string, digest: string, tag?: string): Promise<void> {
  if (tag) await docker('rmi', `${repository}:${tag}`).catch(() => '')
  await docker('rmi', `${repository}@${digest}`).catch(() => '')
}

export async function hasLocalImage(repository: string, digest: string): Promise<boolean> {
  return docker('image', 'inspect', `${repository}@${digest}`).then(
    () => true,
    () => false,
  )
}

/** Signs an image onto devnet through HQ's API as the given user (POST /v1/images, as `jil hq sign`). */
export async function signTestImage(hqUrl: string, user: UserBundle, img: TestImage, version: string): Promise<ImageManifest> {
  const client = await userClient(hqUrl, user)
  try {
    return await client.request<ImageManifest>('POST', '/v1/images', {image: `${img.repository}@${img.digest}`, version, commit: randomBytes(4).toString('hex')})
  } finally {
    await client.close()
  }
}

/** Every container of a node on the test engine, whatever its state (the node's label scopes it). */
export async function containersOf(nodeId: string): Promise<{id: string; name: string; image: string; state: string}[]> {
  const out = await docker('ps', '-a', '--no-trunc', '--filter', `label=jil.node=${nodeId}`, '--format', '{{json .}}')
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as {ID: string; Names: string; Image: string; State: string})
    .map((c) => ({id: c.ID, name: c.Names, image: c.Image, state: c.State}))
}

/** Removes every container of a node (test clean-up, scoped by its label). */
export async function removeContainersOf(nodeId: string): Promise<void> {
  const ids = (await docker('ps', '-aq', '--filter', `label=jil.node=${nodeId}`)).split('\n').filter(Boolean)
  if (ids.length) await docker('rm', '-f', ...ids)
}

/**
 * Pushes a tiny image REGISTRY/REPO:TAG to the test registry over the distribution API, byte for byte
 * the same on every run (an empty layer, a config labelled with the reference), so reruns add nothing;
 * pushed as jil dev pushes its demo image (pushImage).
 * For HQ-side tests that need distinct digests, not for running containers.
 */
export async function pushTinyImage(repo: string, tag: string, registry = process.env.JIL_TEST_REGISTRY): Promise<string> {
  if (!registry) throw new Error('JIL_TEST_REGISTRY is not set: run `eval "$(scripts/test-services.sh env)"` first')
  const emptyTar = Buffer.alloc(1024)
  const layer = gzipSync(emptyTar)
  const config = Buffer.from(JSON.stringify({architecture: 'amd64', os: 'linux', config: {Labels: {'jil.test': `${repo}:${tag}`}}, rootfs: {type: 'layers', diff_ids: [sha256(emptyTar)]}}))
  const mediaType = 'application/vnd.docker.distribution.manifest.v2+json'
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: {mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: sha256(config)},
      layers: [{mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: layer.length, digest: sha256(layer)}],
    }),
  )
  const blob = (bytes: Buffer) => ({digest: sha256(bytes), bytes})
  return pushImage(registry, repo, tag, {layer: blob(layer), config: blob(config), manifest: blob(manifest), mediaType})
}

/** A service of the busybox test image, as a desired state lists it (network none: the test engine has no bridge). */
export function testService(name: string, extra: Partial<DesiredService> = {}): DesiredService {
  const base = testBaseImage()
  return {name, image: 'jil/busybox', repository: base.repository, digest: base.digest, version: 'v1.0', critical: false, network: 'none', command: ['sleep', '3600'], ...extra}
}
