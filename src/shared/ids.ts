import {randomBytes} from 'node:crypto'

/**
 * A node id: country, site, number — `CH-ZUG-01`, `AE-ADGM-01`. Upper case only, so that the id in
 * the cert, in topic names and in HQ's tables is one spelling (the nodes table checks the same).
 * One pattern for the CLI, the node and HQ's route schemas.
 */
export const NODE_ID_PATTERN = /^[A-Z]{2}-[A-Z0-9]{2,8}-\d{2,3}$/

/** A new random id with a type prefix, e.g. `cmd_…`, `ro_…`: 20 base-36 characters (~103 bits), so ids never collide. */
export function newId(prefix: string): string {
  return `${prefix}_${[...randomBytes(20)].map((b) => (b % 36).toString(36)).join('')}`
}
