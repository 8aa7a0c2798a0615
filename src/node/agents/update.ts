import type {Agent} from './types.js'

// Placeholder while the agent is being written in this session.
export const updateAgent: Agent = async () => {
  throw new Error('not yet')
}
