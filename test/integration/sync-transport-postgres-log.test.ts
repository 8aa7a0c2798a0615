import {describe, it} from 'vitest'

import {openPostgresLog} from '../../src/sync/transports/postgres-log.js'
import {freshPgDatabase, hasPg} from '../helpers/pg.js'
import {transportContract} from './sync-transport-contract.js'

// The postgres-log transport against a real PostgreSQL database of its own.
if (hasPg) {
  let db: Awaited<ReturnType<typeof freshPgDatabase>> | undefined
  transportContract('postgres-log', {
    dedupesById: true,
    readsAheadAcrossPartitions: true,
    async open() {
      db = await freshPgDatabase()
      return openPostgresLog(db.url, {heartbeatMs: 300, sessionTimeoutMs: 3000, pollMs: 500})
    },
    async cleanup() {
      await db?.drop()
    },
  })
} else {
  describe.skip('sync transport contract: postgres-log (no JIL_TEST_DATABASE_URL)', () => {
    it('needs PostgreSQL', () => {})
  })
}
