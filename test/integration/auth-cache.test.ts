import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {ManualClock} from '../../src/shared/clock.js'
import type {HqClient} from '../../src/shared/hq-client.js'
import {startTestHq} from '../helpers/hq.js'
import {userClient} from '../helpers/node.js'

/**
 * HQ looks a client's principal up once per TLS socket (src/hq/auth.ts). A keep-alive socket can
 * outlive the certificate it was opened with: the cached principal must not.
 */
describe('the per-socket principal cache', () => {
  const clock = new ManualClock(new Date())
  let t: Awaited<ReturnType<typeof startTestHq>>
  let admin: HqClient

  beforeAll(async () => {
    t = await startTestHq({clock})
    admin = await userClient(t.hq.url, t.admin)
  })
  afterAll(async () => {
    await admin?.close()
    await t?.stop()
  })

  it('refuses a certificate that expired while its socket stayed open', async () => {
    const me = await admin.whoami()
    expect(me.kind).toBe('user')
    // Same keep-alive socket, served from the cache.
    expect((await admin.whoami()).serial).toBe(me.serial)
    clock.set(new Date(Date.parse(me.not_after) + 1000))
    await expect(admin.whoami()).rejects.toMatchObject({status: 401, code: 'CERT_EXPIRED'})
  })
})
