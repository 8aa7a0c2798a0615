import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {migrate} from '../../src/shared/db/migrate.js'
import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {JilError} from '../../src/shared/errors.js'
import {HQ_MIGRATIONS} from '../../src/hq/store/migrations/index.js'
import {listZones} from '../../src/hq/store/index.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'
import {dbAdapters} from '../helpers/adapters.js'

const adapters = dbAdapters()
if (!hasPg) it.skip('PostgreSQL adapter: JIL_TEST_DATABASE_URL is not set', () => {})

const ZONES = ['AE/FSRA', 'AU/ASIC', 'BR/CVM', 'CA/OSC', 'CH/FINMA', 'DE/BAFIN', 'GB/FCA', 'HK/SFC', 'IN/SEBI', 'JP/JFSA', 'KR/FSC', 'SG/MAS', 'US/FINCEN']

describe.each(adapters)('store on $name', (adapter) => {
  let db: Db
  let url: string | undefined
  let cleanup: () => Promise<void>

  beforeAll(async () => {
    ;({db, url, cleanup} = await adapter.open())
  })
  afterAll(async () => {
    await cleanup?.()
  })

  it('records every migration once, and a second run applies nothing', async () => {
    const {rows} = await db.query<{version: number; name: string}>('SELECT version, name FROM schema_migrations ORDER BY version')
    expect(rows.map((r) => r.version)).toEqual(HQ_MIGRATIONS.map((m) => m.version))
    const again = await migrate(db, HQ_MIGRATIONS)
    expect(again.applied).toEqual([])
    expect(again.current).toBe(HQ_MIGRATIONS.at(-1)!.version)
  })

  it('seeds the 13 zones', async () => {
    const zones = await listZones(db)
    expect(zones.map((z) => z.code)).toEqual(ZONES)
    expect(zones.find((z) => z.code === 'CH/FINMA')).toMatchObject({country: 'CH', regulator: 'FINMA'})
  })

  it('refuses a database migrated by a newer jil, and one whose migration differs', async () => {
    await db.query("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    await expect(migrate(db, HQ_MIGRATIONS)).rejects.toMatchObject({code: 'DB_SCHEMA_NEWER'})
    await db.query('DELETE FROM schema_migrations WHERE version = 9999')
    const changed = HQ_MIGRATIONS.map((m, i) => (i === 0 ? {...m, sql: m.sql + '\n-- edited'} : m))
    await expect(migrate(db, changed)).rejects.toMatchObject({code: 'DB_SCHEMA_MISMATCH'})
  })

  it('returns int8 as numbers, timestamptz as Dates and jsonb as values, like the other adapter', async () => {
    const {rows} = await db.query<{n: number; t: Date; j: unknown}>(
      "SELECT 9007199254740991::int8 AS n, '2026-11-27T10:00:00Z'::timestamptz AS t, $1::jsonb AS j",
      [JSON.stringify({a: [1, 'x']})],
    )
    expect(rows[0]).toEqual({n: 9007199254740991, t: new Date('2026-11-27T10:00:00Z'), j: {a: [1, 'x']}})
  })

  it('commits a transaction and reports affected rows', async () => {
    const n = await db.transaction(async (tx) => {
      const r = await tx.query("INSERT INTO users (name, role) VALUES ('alice', 'viewer'), ('bob', 'ops-lead')")
      return r.rowCount
    })
    expect(n).toBe(2)
    const {rows} = await db.query<{name: string}>("SELECT name FROM users WHERE name IN ('alice', 'bob') ORDER BY name")
    expect(rows.map((r) => r.name)).toEqual(['alice', 'bob'])
  })

  it('rolls back everything when the transaction throws', async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO users (name, role) VALUES ('carol', 'viewer')")
        throw new Error('boom')
      }),
    ).rejects.toThrow('boom')
    expect((await db.query("SELECT 1 FROM users WHERE name = 'carol'")).rowCount).toBe(0)
  })

  it('rolls back on a constraint violation and keeps the database usable', async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO users (name, role) VALUES ('dave', 'viewer')")
        await tx.query("INSERT INTO users (name, role) VALUES ('erin', 'superuser')")
      }),
    ).rejects.toThrow(/check constraint/)
    expect((await db.query("SELECT 1 FROM users WHERE name = 'dave'")).rowCount).toBe(0)
    expect((await db.query('SELECT 1 AS one')).rows).toEqual([{one: 1}])
  })

  it('refuses the outer handle inside a transaction, and the tx handle after it ended', async () => {
    let leaked: {query: Db['query']} | undefined
    await expect(
      db.transaction(async (tx) => {
        leaked = tx
        await tx.query("INSERT INTO users (name, role) VALUES ('frank', 'viewer')")
        await db.query('SELECT 1')
      }),
    ).rejects.toMatchObject({code: 'DB_OUTER_HANDLE_IN_TX'})
    expect((await db.query("SELECT 1 FROM users WHERE name = 'frank'")).rowCount).toBe(0)
    await expect(leaked!.query('SELECT 1')).rejects.toMatchObject({code: 'DB_TX_ENDED'})
    await expect(db.transaction(async () => db.transaction(async () => 1))).rejects.toBeInstanceOf(JilError)
  })

  it('lets other callers use the database while a transaction runs', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const tx = db.transaction(async (t) => {
      await t.query("INSERT INTO users (name, role) VALUES ('gina', 'viewer')")
      await gate
    })
    // Not inside the callback: allowed (on PGlite it waits for the transaction, on pg it runs alongside).
    const outside = db.query<{n: number}>('SELECT count(*)::int8 AS n FROM zones')
    release()
    await tx
    expect((await outside).rows[0]!.n).toBe(13)
  })

  it('gives an advisory lock to one holder at a time', async () => {
    const a = await db.tryAdvisoryLock(42)
    expect(a).not.toBeNull()
    expect(await db.tryAdvisoryLock(42)).toBeNull()
    const other = await db.tryAdvisoryLock(43)
    expect(other).not.toBeNull()
    await other!.release()
    const waiting = db.advisoryLock(42)
    let got = false
    void waiting.then(() => (got = true))
    await new Promise((r) => setImmediate(r))
    expect(got).toBe(false)
    await a!.release()
    const b = await waiting
    expect(b.key).toBe(42n)
    await b.release()
    const c = await db.tryAdvisoryLock(42)
    expect(c).not.toBeNull()
    await c!.release()
  })

  it.runIf(adapter.name === 'pg')('holds the advisory lock against another process\'s pool, and migrates once when replicas start together', async () => {
    const a = await db.tryAdvisoryLock(7)
    const other = await openPg(url!)
    try {
      expect(await other.tryAdvisoryLock(7)).toBeNull()
      await a!.release()
      const b = await other.tryAdvisoryLock(7)
      expect(b).not.toBeNull()
      await b!.release()

      const fresh = await freshPgDatabase()
      const r1 = await openPg(fresh.url)
      const r2 = await openPg(fresh.url)
      const [m1, m2] = await Promise.all([migrate(r1, HQ_MIGRATIONS), migrate(r2, HQ_MIGRATIONS)])
      expect([...m1.applied, ...m2.applied]).toEqual(HQ_MIGRATIONS.map((m) => m.version))
      expect((await listZones(r1)).length).toBe(13)
      await r1.close()
      await r2.close()
      await fresh.drop()
    } finally {
      await other.close()
    }
  })
})
