import type {Logger} from 'pino'

import {openPg} from '../shared/db/pg.js'
import {messageOf} from '../shared/errors.js'
import {Pause} from '../shared/loop.js'
import {emit} from '../sync/outbox.js'
import {DEMO_TABLE, DEMO_TABLE_SQL, LOG_DATABASE, nodeDatabaseName, type DevNode} from './plan.js'
import type {DevPostgres} from './postgres.js'

/**
 * Event sync in `jil dev`: one PostgreSQL database per node (its services' data) and one for the
 * postgres-log bus, the demo table in each node's database, and a few demo rows written the way a
 * service writes them — the row and jil_emit in one transaction — so the relays, the bus and the
 * appliers carry real traffic and `jil node sync status` has something to show.
 */

/** The JIL_SYNC_* settings of a node (written into its node.env). */
export function syncSettings(pg: DevPostgres, nodeId: string): Record<string, string> {
  return {
    JIL_SYNC_TRANSPORT: 'postgres-log',
    JIL_NODE_DATABASE_URL: pg.urlFor(nodeDatabaseName(nodeId)),
    JIL_SYNC_LOG_URL: pg.urlFor(LOG_DATABASE),
    JIL_SYNC_TABLES: DEMO_TABLE.spec,
    // Two partitions: a dev fleet's traffic fits, and each node's consumer polls fewer of them.
    JIL_SYNC_PARTITIONS: '2',
  }
}

/** The databases exist and every node's has the demo table (the services' schema, made before sync starts). */
export async function prepareSyncDatabases(pg: DevPostgres, nodes: readonly DevNode[]): Promise<void> {
  await pg.ensureDatabases([LOG_DATABASE, ...nodes.map((n) => nodeDatabaseName(n.id))])
  for (const n of nodes) {
    const db = await openPg(pg.urlFor(nodeDatabaseName(n.id)), {max: 1, applicationName: 'jil-dev'})
    try {
      await db.exec(DEMO_TABLE_SQL)
    } finally {
      await db.close()
    }
  }
}

/**
 * In the background: once a node's sync runner has set up its database (jil_sync_node exists), the
 * node's "wallet service" updates its own three accounts, each change a new version emitted through
 * the outbox. stop() cuts the waits short and waits for the write in flight.
 */
export function startDemoWrites(o: {pg: DevPostgres; nodes: readonly DevNode[]; log: Logger; timeoutMs?: number}): {done: Promise<number>; stop(): Promise<void>} {
  let stopped = false
  const pause = new Pause()
  const deadline = Date.now() + (o.timeoutMs ?? 120_000)
  const writeNode = async (n: DevNode): Promise<number> => {
    const db = await openPg(o.pg.urlFor(nodeDatabaseName(n.id)), {max: 1, applicationName: 'jil-dev-demo'})
    try {
      while (!stopped && Date.now() < deadline) {
        const ready = await db.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'jil_sync_node' AND table_schema = current_schema()")
        if (ready.rowCount) break
        await pause.sleep(500)
      }
      if (stopped || Date.now() >= deadline) return 0
      let written = 0
      for (let k = 1; k <= 3 && !stopped; k++) {
        const id = `${n.id.toLowerCase()}-acct-${k}`
        await db.transaction(async (tx) => {
          const cur = await tx.query<{version: number}>('SELECT version FROM wallet_accounts WHERE id = $1 FOR UPDATE', [id])
          const version = (cur.rows[0]?.version ?? 0) + 1
          const row = {id, owner: n.id, balance: 1000 * k + version, version}
          await tx.query(
            `INSERT INTO wallet_accounts (id, owner, balance, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, balance = EXCLUDED.balance, version = EXCLUDED.version`,
            [row.id, row.owner, row.balance, row.version],
          )
          await emit(tx, {table: DEMO_TABLE.name, key: id, version, op: 'upsert', row})
        })
        written++
      }
      return written
    } finally {
      await db.close()
    }
  }
  const done = (async () => {
    let total = 0
    for (const n of o.nodes) {
      if (stopped) break
      try {
        total += await writeNode(n)
      } catch (err) {
        o.log.warn({node: n.id, err: messageOf(err)}, 'demo rows not written')
      }
    }
    o.log.info({rows: total}, 'demo rows written through the outbox')
    return total
  })()
  return {
    done,
    stop: async () => {
      stopped = true
      pause.wake()
      await done
    },
  }
}
