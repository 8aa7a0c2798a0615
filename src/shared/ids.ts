/**
 * A node id: country, site, number — `CH-ZUG-01`, `AE-ADGM-01`. Upper case only, so that the id in
 * the cert, in topic names and in HQ's tables is one spelling (the nodes table checks the same).
 * One pattern for the CLI, the node and HQ's route schemas.
 */
export const NODE_ID_PATTERN = /^[A-Z]{2}-[A-Z0-9]{2,8}-\d{2,3}$/
