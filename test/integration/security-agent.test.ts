import {writeFile} from 'node:fs/promises'
import {createServer, type AddressInfo, type Server} from 'node:net'
import {join} from 'node:path'

import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {runAgent} from '../../src/node/agents/run.js'
import {loadNodeIdentity} from '../../src/node/identity.js'
import {containerName, DockerRuntime} from '../../src/node/runtime.js'
import {readLastReport} from '../../src/node/state.js'
import type {AgentReport} from '../../src/shared/api.js'
import {ManualClock} from '../../src/shared/clock.js'
import type {DesiredService} from '../../src/shared/stack.js'
import {startTestHq} from '../helpers/hq.js'
import {docker, forgetImage, makeTestImage, removeContainersOf, signTestImage, testBaseImage, testService, type TestImage} from '../helpers/images.js'
import {joinTestNode, agentContexts, type TestNode} from '../helpers/node.js'

const IMAGE = process.env.JIL_TEST_IMAGE
if (!IMAGE && process.env.CI) throw new Error('JIL_TEST_IMAGE is not set: run `eval "$(scripts/test-services.sh env)"` first')

const NODE = 'JP-SECAG-01'
const DAY = 86_400_000

const ids = (r: AgentReport) => r.findings.map((f) => f.id)

describe.runIf(IMAGE)('security agent on the real engine', () => {
  let t: Awaited<ReturnType<typeof startTestHq>>
  let node: TestNode
  let runtime: DockerRuntime
  let unsigned: TestImage
  const base = IMAGE ? testBaseImage() : {registry: '', repository: '', digest: ''}
  const {context, closeAll} = agentContexts(() => node)
  const service = (name: string, extra: Partial<DesiredService> = {}): DesiredService => testService(name, {user: '1000', ...extra})
  const run = async (s: DesiredService) => {
    const id = await runtime.create(NODE, s, containerName(NODE, s.name))
    await runtime.start(id)
    return id
  }

  beforeAll(async () => {
    t = await startTestHq({registry: base.registry})
    node = await joinTestNode(t.hq, t.admin, {nodeId: NODE, zone: 'JP/JFSA'})
    runtime = await DockerRuntime.connect(process.env.JIL_TEST_DOCKER_HOST ?? process.env.DOCKER_HOST)
    await removeContainersOf(NODE)
    if (!(await runtime.hasImage(`${base.repository}@${base.digest}`))) await runtime.pull(base.repository, base.digest)
    // The base image is signed onto devnet (the node's track); a fresh digest is not signed at all.
    await signTestImage(t.hq.url, t.admin, {image: 'jil/busybox', repository: base.repository, tag: 'test', digest: base.digest}, 'v1.0')
    unsigned = await makeTestImage()
  })
  afterEach(async () => {
    await closeAll()
    await removeContainersOf(NODE)
  })
  afterAll(async () => {
    await removeContainersOf(NODE)
    if (unsigned) await forgetImage(unsigned.repository, unsigned.digest, unsigned.tag)
    await t?.stop()
    await node?.cleanup()
  })

  it('flags an unsigned image (or a container whose image is not its labelled digest) as critical, not a signed one; keeps the findings locally', async () => {
    await run(service('signed'))
    await run(service('rogue', {repository: unsigned.repository, digest: unsigned.digest, version: 'v9.9'}))
    // A container that claims the signed digest in its label but runs another image.
    await docker('run', '-d', '--network', 'none', '--user', '1000', '--label', `jil.node=${NODE}`, '--label', 'jil.service=liar', '--label', `jil.digest=${base.digest}`, '--name', containerName(NODE, 'liar'), `${unsigned.repository}@${unsigned.digest}`, 'sleep', '3600')
    const report = await runAgent('security', await context())
    expect(report.ok).toBe(true)
    const rogue = report.findings.find((f) => f.id === 'unsigned-image:rogue')
    expect(rogue).toMatchObject({severity: 'critical'})
    expect(rogue!.evidence).toContain('UNSIGNED')
    expect(report.findings.find((f) => f.id === 'unsigned-image:liar')).toMatchObject({severity: 'critical', evidence: expect.stringContaining('not from the labelled digest')})
    expect(ids(report)).not.toContain('unsigned-image:signed')
    expect(report.details).toMatchObject({images: {checked: 3, unsigned: 2}})
    const kept = await readLastReport(node.stateDir, 'security')
    expect(kept?.findings).toEqual(report.findings)
  })

  it('flags containers running as root (the image default, 0, root:…), not one with user 1000', async () => {
    await run(service('rooted', {user: undefined}))
    await run(service('zero', {user: '0:0'}))
    await run(service('named-root', {user: 'root'}))
    await run(service('unprivileged', {user: '1000'}))
    const report = await runAgent('security', await context())
    expect(ids(report).filter((i) => i.startsWith('container-root:')).sort()).toEqual(['container-root:named-root', 'container-root:rooted', 'container-root:zero'])
    expect(report.findings.find((f) => f.id === 'container-root:rooted')).toMatchObject({severity: 'warning', evidence: expect.stringContaining("the image's default user (root)")})
    expect(report.details).toMatchObject({root: {checked: 4, flagged: 3}})
  })

  it('flags a listening port outside the allowlist, with its address, and not an allowlisted one', async () => {
    const listen = async () => {
      const s = createServer()
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
      return s
    }
    const servers: Server[] = [await listen(), await listen()]
    const [open, allowed] = servers.map((s) => (s.address() as AddressInfo).port) as [number, number]
    try {
      const report = await runAgent('security', await context({env: {JIL_PORT_ALLOWLIST: `22,${allowed}`}}))
      expect(report.findings.find((f) => f.id === `port-open:tcp/${open}`)).toMatchObject({severity: 'warning', evidence: expect.stringContaining(`127.0.0.1:${open}`)})
      expect(ids(report)).not.toContain(`port-open:tcp/${allowed}`)
    } finally {
      for (const s of servers) await new Promise((r) => s.close(r))
    }
  })

  it('warns when the certificate is past its renewal point, is critical within 7 days and once expired', async () => {
    const {cert} = await loadNodeIdentity(node.stateDir)
    const expiryAt = async (at: number) => (await runAgent('security', await context({clock: new ManualClock(at)}))).findings.find((f) => f.id === 'cert-expiry')
    const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime()
    expect(await expiryAt(cert.notBefore.getTime() + DAY)).toBeUndefined()
    expect(await expiryAt(cert.notBefore.getTime() + (lifetime * 2) / 3 + DAY)).toMatchObject({severity: 'warning'})
    expect(await expiryAt(cert.notAfter.getTime() - 6 * DAY)).toMatchObject({severity: 'critical', title: expect.stringContaining('expires in')})
    expect(await expiryAt(cert.notAfter.getTime() + 1000)).toMatchObject({severity: 'critical', title: 'the node certificate has expired'})
  })

  it('audits sshd_config and the firewall as configured', async () => {
    const sshd = join(node.stateDir, 'sshd_config')
    await writeFile(sshd, 'PermitRootLogin yes\nPasswordAuthentication no\nMatch User ci\n  PasswordAuthentication yes\n')
    const report = await runAgent('security', await context({env: {JIL_SSHD_CONFIG: sshd}}))
    expect(report.findings.find((f) => f.id === 'ssh-permit-root-login')).toMatchObject({severity: 'critical', evidence: `${sshd}: PermitRootLogin yes`})
    expect(ids(report)).not.toContain('ssh-password-authentication')
    // This machine's firewall is whatever it is: the finding must agree with what the check determined.
    const fw = report.details.firewall as {determined: boolean; default_deny: boolean | null}
    const fwIds = ids(report).filter((i) => i.startsWith('firewall-'))
    expect(fwIds).toEqual(!fw.determined ? ['firewall-unknown'] : fw.default_deny ? [] : ['firewall-default-allow'])
    const none = await runAgent('security', await context({env: {JIL_SSHD_CONFIG: join(node.stateDir, 'no-sshd_config')}}))
    expect(none.findings.find((f) => f.id === 'ssh-not-installed')).toMatchObject({severity: 'info'})
  })
})
