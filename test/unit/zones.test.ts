import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import m001 from '../../src/hq/store/migrations/001_init.sql'
import {ZONE_ANY_FORM_PATTERN, ZONES, ZONES_HINT, zoneFromPath, zoneToPath} from '../../src/shared/zones.js'
import {openTestPglite} from '../helpers/pglite-template.js'

describe('the zone list', () => {
  let pglite: Awaited<ReturnType<typeof openTestPglite>>
  beforeAll(async () => {
    pglite = await openTestPglite()
  })
  afterAll(async () => {
    await pglite?.cleanup()
  })

  it('holds exactly the zones HQ\'s migrated database holds', async () => {
    // Every migration applied: a later one adding a jurisdiction must add it to the list too.
    const {rows} = await pglite.db.query<{code: string}>('SELECT code FROM zones ORDER BY code')
    expect([...ZONES].sort()).toEqual(rows.map((r) => r.code))
    expect(ZONES).toHaveLength(13)
  })

  it('is in the order migration 001 seeds them', () => {
    const values = m001.slice(m001.indexOf('INSERT INTO zones'), m001.indexOf(';', m001.indexOf('INSERT INTO zones')))
    const seeded = [...values.matchAll(/\(\s*'([A-Z]{2}\/[A-Z]+)'/g)].map((m) => m[1])
    expect(seeded).toEqual([...ZONES])
  })

  it('converts between the command-line form and the URL form', () => {
    expect(zoneToPath('CH/FINMA')).toBe('CH_FINMA')
    expect(zoneFromPath('CH_FINMA')).toBe('CH/FINMA')
    expect(zoneFromPath('CH/FINMA')).toBe('CH/FINMA')
    for (const z of ZONES) {
      expect(zoneFromPath(zoneToPath(z))).toBe(z)
      expect(ZONE_ANY_FORM_PATTERN.test(z) && ZONE_ANY_FORM_PATTERN.test(zoneToPath(z))).toBe(true)
    }
    expect(ZONES_HINT).toBe('zones: CH/FINMA, AE/FSRA, SG/MAS, US/FINCEN, GB/FCA, DE/BAFIN, JP/JFSA, BR/CVM, IN/SEBI, AU/ASIC, KR/FSC, CA/OSC, HK/SFC')
  })
})
