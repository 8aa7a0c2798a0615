/**
 * A node's status at HQ, derived from what HQ knows (never stored loosely). Apart from api.ts so a
 * command's flag options do not load TypeBox.
 */
export const NODE_STATUSES = ['pending', 'active', 'degraded', 'offline', 'paused', 'stopped', 'upgrading', 'revoked'] as const
export type NodeStatus = (typeof NODE_STATUSES)[number]
