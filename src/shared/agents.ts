/** The node's four agents (the seed's self-maintenance agents). Apart from api.ts: no TypeBox for cron runs. */
export const AGENT_NAMES = ['health', 'maintenance', 'security', 'update'] as const
export type AgentName = (typeof AGENT_NAMES)[number]
