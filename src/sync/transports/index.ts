import type {SyncSettings} from '../config.js'
import type {Transport} from '../transport.js'
import type {KafkaIdentity} from './kafka.js'

export type {KafkaIdentity}

/** The transport the node's settings name, its module loaded only then (kafkajs costs ~260 ms to import). */
export async function openTransport(s: SyncSettings, identity?: () => Promise<KafkaIdentity>, clientId = 'jil-sync'): Promise<Transport> {
  if (s.transport === 'kafka') {
    const {openKafka} = await import('./kafka.js')
    return openKafka({brokers: s.seeds, clientId, ...(identity ? {identity} : {})})
  }
  const {openPostgresLog} = await import('./postgres-log.js')
  return openPostgresLog(s.logUrl!)
}
