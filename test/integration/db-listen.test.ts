import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {dbAdapters} from '../helpers/adapters.js'
import {hasPg} from '../helpers/pg.js'
import {until} from '../helpers/wait.js'

if (!hasPg) it.skip('PostgreSQL adapter: JIL_TEST_DATABASE_URL is not set', () => {})

const notify = (q: Pick<Db, 'query'>, channel: string, payload: string) => q.query('SELECT pg_notify($1, $2)', [channel, payload])

/** Db.listen on both adapters: what the live fleet stream's hub builds on (LISTEN/NOTIFY, sent on commit). */
describe.each(dbAdapters())('Db.listen on $name', (adapter) => {
  let db: Db
  let url: string | undefined
  let cleanup: () => Promise<void>

  beforeAll(async () => {
    ;({db, url, cleanup} = await adapter.open())
  })
  afterAll(async () => {
    await cleanup?.()
  })

  it('delivers a notification when its transaction commits, and never one rolled back', async () => {
    const got: string[] = []
    const stop = await db.listen('jil_t_commit', (p) => got.push(p))
    await db.transaction(async (tx) => {
      await notify(tx, 'jil_t_commit', 'one')
      // Not before the commit, whatever time it is given.
      await sleep(100)
      expect(got).toEqual([])
    })
    await until('the committed notification', async () => (got.includes('one') ? true : undefined), 10_000)
    await expect(
      db.transaction(async (tx) => {
        await notify(tx, 'jil_t_commit', 'rolled back')
        throw new Error('roll back')
      }),
    ).rejects.toThrow('roll back')
    await notify(db, 'jil_t_commit', 'two')
    await until('the next notification', async () => (got.includes('two') ? true : undefined), 10_000)
    expect(got).toEqual(['one', 'two'])
    await stop()
  })

  it('fans a channel out to each of its listeners; one that stops leaves the others, other channels stay apart', async () => {
    const a: string[] = []
    const b: string[] = []
    const other: string[] = []
    const stopA = await db.listen('jil_t_fan', (p) => a.push(p))
    const stopB = await db.listen('jil_t_fan', (p) => b.push(p))
    const stopOther = await db.listen('jil_t_other', (p) => other.push(p))
    await notify(db, 'jil_t_fan', 'x')
    await until('both listeners', async () => (a.length && b.length ? true : undefined), 10_000)
    await stopA()
    await stopA() // twice is harmless
    await notify(db, 'jil_t_fan', 'y')
    await notify(db, 'jil_t_other', 'marker')
    await until('the marker on the other channel', async () => (other.length ? true : undefined), 10_000)
    await until('the second notification', async () => (b.length === 2 ? true : undefined), 10_000)
    expect(a).toEqual(['x'])
    expect(b).toEqual(['x', 'y'])
    expect(other).toEqual(['marker'])
    await stopB()
    await stopOther()
  })

  it('a callback may query through the outer handle (the hub loads views from it), for a notification sent in a transaction', async () => {
    const results: unknown[] = []
    const stop = await db.listen('jil_t_outside', () => {
      db.query<{n: number}>('SELECT 1 AS n').then(
        (r) => results.push(r.rows[0]!.n),
        (err: unknown) => results.push(err),
      )
    })
    await db.transaction(async (tx) => {
      await notify(tx, 'jil_t_outside', 'p')
    })
    await until('the callback query', async () => (results.length ? true : undefined), 10_000)
    expect(results).toEqual([1])
    await stop()
  })

  it('refuses a channel name that would need quoting, and the outer handle inside a transaction', async () => {
    await expect(db.listen('Fleet-Events', () => {})).rejects.toThrow(RangeError)
    await expect(db.listen('x; DROP TABLE nodes', () => {})).rejects.toThrow(RangeError)
    await expect(db.transaction(() => db.listen('jil_t_tx', () => {}))).rejects.toMatchObject({code: 'DB_OUTER_HANDLE_IN_TX'})
  })

  it.runIf(adapter.name === 'pg')('hears other processes, LISTENs again after its connection is lost (and says so), and lets go on close', async () => {
    const replica = await openPg(url!, {applicationName: 'jil-t-replica'})
    const listenerBackends = async () =>
      (await db.query<{n: number}>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'jil-t-replica:listen' AND datname = current_database()")).rows[0]!.n
    try {
      const got: string[] = []
      let reconnects = 0
      const stop = await replica.listen('jil_t_lost', (p) => got.push(p), {onReconnect: () => reconnects++})
      // From another Db (another HQ replica's pool): the same database, so it arrives.
      await notify(db, 'jil_t_lost', 'before')
      await until('the first notification', async () => (got.length ? true : undefined), 10_000)
      expect(await listenerBackends()).toBe(1)

      // The server ends the listening session (a restart, a failover, an admin): it comes back by itself.
      await db.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'jil-t-replica:listen' AND datname = current_database()")
      await until('the listener to reconnect', async () => (reconnects === 1 ? true : undefined), 20_000)
      await notify(db, 'jil_t_lost', 'after')
      await until('a notification after the reconnect', async () => (got.includes('after') ? true : undefined), 10_000)
      expect(got).toEqual(['before', 'after'])
      await stop()
    } finally {
      await replica.close()
    }
    await until('the listening session to end', async () => ((await listenerBackends()) === 0 ? true : undefined), 10_000)
  })
})
