import {createHash} from 'node:crypto'
import {cp, mkdtemp, rename, rm, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {migrate} from '../../src/shared/db/migrate.js'
import {openPglite} from '../../src/shared/db/pglite.js'
import type {Db} from '../../src/shared/db/types.js'
import {HQ_MIGRATIONS} from '../../src/hq/store/migrations/index.js'

/**
 * A migrated PGlite data dir made once (initdb takes seconds) and copied for each test, which
 * reopens in under a second. Keyed by the migrations, so a schema change makes a new template.
 */
export function templateDir(): string {
  const h = createHash('sha256')
  for (const m of HQ_MIGRATIONS) h.update(`${m.version}:${m.sql}`)
  return join(tmpdir(), `jil-pglite-template-${h.digest('hex').slice(0, 12)}`)
}

export async function ensureTemplate(): Promise<string> {
  const dir = templateDir()
  try {
    await stat(join(dir, 'PG_VERSION'))
    return dir
  } catch {
    // build below
  }
  const building = `${dir}.build-${process.pid}`
  await rm(building, {recursive: true, force: true})
  const db = await openPglite(building)
  await migrate(db, HQ_MIGRATIONS)
  await db.close()
  try {
    await rename(building, dir)
  } catch {
    await rm(building, {recursive: true, force: true}) // another process won the race
  }
  return dir
}

/** A fresh, migrated PGlite database in its own temp dir (a copy of the template). */
export async function openTestPglite(): Promise<{db: Db; dir: string; cleanup: () => Promise<void>}> {
  const dir = await mkdtemp(join(tmpdir(), 'jil-pglite-'))
  await cp(await ensureTemplate(), dir, {recursive: true})
  const db = await openPglite(dir)
  return {
    db,
    dir,
    cleanup: async () => {
      await db.close()
      await rm(dir, {recursive: true, force: true})
    },
  }
}
