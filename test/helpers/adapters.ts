import {HQ_MIGRATIONS} from '../../src/hq/store/migrations/index.js'
import {migrate} from '../../src/shared/db/migrate.js'
import {openPg} from '../../src/shared/db/pg.js'
import type {Db} from '../../src/shared/db/types.js'
import {freshPgDatabase, hasPg} from './pg.js'
import {openTestPglite} from './pglite-template.js'

export type OpenedDb = {db: Db; url?: string; cleanup: () => Promise<void>}
export type DbAdapter = {name: 'pglite' | 'pg'; open: () => Promise<OpenedDb>}

/** Both storage adapters, each opening a fresh migrated database: suites run once per adapter. */
export function dbAdapters(): DbAdapter[] {
  const list: DbAdapter[] = [{name: 'pglite', open: () => openTestPglite()}]
  if (hasPg) {
    list.push({
      name: 'pg',
      open: async () => {
        const d = await freshPgDatabase()
        const db = await openPg(d.url)
        await migrate(db, HQ_MIGRATIONS)
        return {
          db,
          url: d.url,
          cleanup: async () => {
            await db.close()
            await d.drop()
          },
        }
      },
    })
  }
  return list
}
