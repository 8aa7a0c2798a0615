import type {Admin, Consumer as KafkaConsumer, Kafka, KafkaConfig, Producer} from 'kafkajs'

import {JilError, messageOf} from '../../shared/errors.js'
import {partitionFor, type ConsumedBatch, type ConsumeOptions, type Consumer, type PartitionOffset, type ProduceRecord, type TopicPartition, type TopicSpec, type Transport} from '../transport.js'

/**
 * The kafkajs transport, for RedPanda (REDPANDA_SEEDS). The producer is idempotent with acks from
 * all in-sync replicas; connections use mutual TLS with the node's certificate and HQ's CA (the
 * brokers trust HQ's CA: `jil hq ca export`), and a renewed certificate means a new client.
 * Consumers never commit to Kafka (autoCommit off): the applier stores offsets in the node's
 * PostgreSQL with what it applied, and on every group join each assigned partition is sought to the
 * stored offset; records below it that a fetch already had in flight are dropped, not handled.
 */

/** The node's identity for the brokers; undefined fields mean plaintext (a local broker in tests). */
export type KafkaIdentity = {cert: string; key: string; ca: string} | undefined

export type KafkaTransportOptions = {
  brokers: string[]
  clientId: string
  /** Read before each client is made and on every produce: a changed certificate makes a new client. */
  identity?: () => Promise<KafkaIdentity>
  /** Replication factor of created topics (default: the broker's default). */
  replicationFactor?: number
  sessionTimeoutMs?: number
}

function busError(what: string, err: unknown): JilError {
  if (err instanceof JilError) return err
  return new JilError('SYNC_BUS_UNAVAILABLE', `could not ${what} on the brokers: ${messageOf(err)}`, {hint: 'check REDPANDA_SEEDS, the brokers, and that they trust HQ\'s CA (jil hq ca export)', status: 503, cause: err})
}

export async function openKafka(o: KafkaTransportOptions): Promise<Transport> {
  const mod = await import('kafkajs')
  const kafkajs = (mod as unknown as {default?: typeof mod}).default ?? mod
  const t = new KafkaTransport(o, (config) => new kafkajs.Kafka({...config, logLevel: kafkajs.logLevel.WARN}))
  await t.connect()
  return t
}

type Client = {kafka: Kafka; producer: Producer; admin: Admin; certPem: string | undefined}

class KafkaTransport implements Transport {
  readonly kind = 'kafka' as const
  private client: Client | undefined
  private readonly partitionCounts = new Map<string, number>()
  private readonly consumers = new Set<{fail(err: JilError): void}>()

  constructor(
    private readonly o: KafkaTransportOptions,
    private readonly make: (config: KafkaConfig) => Kafka,
  ) {}

  async connect(): Promise<Client> {
    const id = await this.o.identity?.()
    if (this.client && this.client.certPem === id?.cert) return this.client
    if (this.client) {
      // Renewed: running consumers end (the runner starts a new session on the new client).
      for (const c of this.consumers) c.fail(new JilError('SYNC_CERT_RENEWED', 'the node certificate was renewed: reconnecting to the brokers'))
      await this.disconnect()
    }
    const kafka = this.make({
      clientId: this.o.clientId,
      brokers: this.o.brokers,
      ...(id ? {ssl: {cert: id.cert, key: id.key, ca: [id.ca], rejectUnauthorized: true}} : {}),
      retry: {retries: 5},
    })
    // Idempotent: the broker drops a retried batch it already has (one session's retries).
    const producer = kafka.producer({idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false})
    const admin = kafka.admin()
    try {
      await producer.connect()
      await admin.connect()
    } catch (err) {
      await producer.disconnect().catch(() => {})
      await admin.disconnect().catch(() => {})
      throw busError('connect', err)
    }
    this.client = {kafka, producer, admin, certPem: id?.cert}
    return this.client
  }

  private async disconnect(): Promise<void> {
    const c = this.client
    this.client = undefined
    await c?.producer.disconnect().catch(() => {})
    await c?.admin.disconnect().catch(() => {})
  }

  async ensureTopics(topics: readonly TopicSpec[]): Promise<void> {
    const {admin} = await this.connect()
    try {
      const existing = new Set(await admin.listTopics())
      const missing = topics.filter((t) => !existing.has(t.name))
      if (missing.length) {
        await admin.createTopics({
          waitForLeaders: true,
          topics: missing.map((t) => ({topic: t.name, numPartitions: t.partitions, ...(this.o.replicationFactor ? {replicationFactor: this.o.replicationFactor} : {})})),
        })
      }
    } catch (err) {
      // Another node created it between our list and our create: that is what we wanted.
      if (!/already exists/i.test(messageOf(err))) throw busError('create topics', err)
    }
  }

  private async partitionsOf(topic: string): Promise<number> {
    let n = this.partitionCounts.get(topic)
    if (n === undefined) {
      const {admin} = await this.connect()
      const md = await admin.fetchTopicMetadata({topics: [topic]}).catch((err: unknown) => {
        throw busError(`read the metadata of ${topic}`, err)
      })
      n = md.topics[0]?.partitions.length ?? 0
      if (n === 0) throw new JilError('SYNC_TOPIC_UNKNOWN', `the brokers have no topic ${topic}`, {hint: 'topics are created by the node at sync start', status: 500})
      this.partitionCounts.set(topic, n)
    }
    return n
  }

  async produce(records: readonly ProduceRecord[]): Promise<void> {
    if (records.length === 0) return
    const {producer} = await this.connect()
    const byTopic = new Map<string, {key: string; value: Buffer; partition: number; headers?: Record<string, string>}[]>()
    for (const r of records) {
      // Explicit partitions by the same murmur2 as the postgres-log: one key, one partition, either bus.
      const partition = partitionFor(r.key, await this.partitionsOf(r.topic))
      const list = byTopic.get(r.topic) ?? []
      list.push({key: r.key, value: r.value, partition, ...(r.id ? {headers: {event_id: r.id}} : {})})
      byTopic.set(r.topic, list)
    }
    try {
      await producer.sendBatch({acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({topic, messages}))})
    } catch (err) {
      throw busError('publish', err)
    }
  }

  async endOffsets(topics: readonly string[]): Promise<PartitionOffset[]> {
    const {admin} = await this.connect()
    const out: PartitionOffset[] = []
    for (const topic of topics) {
      try {
        for (const p of await admin.fetchTopicOffsets(topic)) out.push({topic, partition: p.partition, offset: Number(p.high)})
      } catch (err) {
        if (/does not host this topic-partition|UNKNOWN_TOPIC/i.test(messageOf(err))) continue
        throw busError('read end offsets', err)
      }
    }
    return out.sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition))
  }

  async consume(o: ConsumeOptions): Promise<Consumer> {
    const {kafka} = await this.connect()
    // 4 MiB per partition and fetch: one fetch can carry a whole applier batch in a replay (5000 events of a few hundred bytes).
    const consumer: KafkaConsumer = kafka.consumer({groupId: o.group, allowAutoTopicCreation: false, sessionTimeout: this.o.sessionTimeoutMs ?? 30_000, maxBytesPerPartition: 4 << 20})
    let assigned: TopicPartition[] = []
    /** The next offset to handle per partition, from the caller at the latest join. */
    const next = new Map<string, number>()
    let joined: Promise<void> = Promise.resolve()
    let failure: JilError | undefined
    let settle!: {resolve: () => void; reject: (e: unknown) => void}
    const done = new Promise<void>((resolve, reject) => (settle = {resolve, reject}))
    done.catch(() => {})
    const k = (topic: string, partition: number) => `${topic}\0${partition}`

    const fail = (err: JilError) => {
      failure ??= err
      void consumer.disconnect().finally(() => settle.reject(failure))
    }
    const handle = {fail}
    this.consumers.add(handle)

    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      assigned = Object.entries(e.payload.memberAssignment).flatMap(([topic, parts]) => parts.map((partition) => ({topic, partition})))
      // Every join (first or after a rebalance): where to start comes from the caller's store.
      joined = (async () => {
        const positions = await o.position(assigned)
        next.clear()
        for (const p of positions) {
          next.set(k(p.topic, p.partition), p.offset)
          consumer.seek({topic: p.topic, partition: p.partition, offset: String(p.offset)})
        }
        o.onAssignment?.(assigned)
      })()
      joined.catch((err: unknown) => fail(busError('read the stored offsets', err)))
    })
    consumer.on(consumer.events.CRASH, (e) => {
      if (!e.payload.restart) fail(busError('consume', e.payload.error))
    })

    try {
      await consumer.connect()
      await consumer.subscribe({topics: [...o.topics], fromBeginning: true})
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        eachBatch: async ({batch, resolveOffset, heartbeat, isRunning, isStale}) => {
          await joined
          if (!isRunning() || isStale()) return
          const from = next.get(k(batch.topic, batch.partition)) ?? 0
          const max = o.maxBatch ?? 1000
          const records = batch.messages
            .filter((m) => Number(m.offset) >= from)
            .map((m) => ({offset: Number(m.offset), key: m.key?.toString() ?? '', value: m.value ?? Buffer.alloc(0), timestamp: new Date(Number(m.timestamp))}))
          const chunks: ConsumedBatch[] = []
          for (let i = 0; i < records.length; i += max) chunks.push({topic: batch.topic, partition: batch.partition, records: records.slice(i, i + max)})
          for (const [i, chunk] of chunks.entries()) {
            const ahead = chunks[i + 1]
            if (ahead) o.onFetched?.(ahead)
            try {
              await o.onBatch(chunk)
            } catch (err) {
              fail(err instanceof JilError ? err : new JilError('SYNC_APPLY_FAILED', `applying a batch failed: ${messageOf(err)}`, {cause: err, status: 500}))
              throw err
            }
            const last = chunk.records.at(-1)!.offset
            next.set(k(batch.topic, batch.partition), last + 1)
            resolveOffset(String(last))
            await heartbeat()
          }
        },
      })
    } catch (err) {
      this.consumers.delete(handle)
      await consumer.disconnect().catch(() => {})
      throw busError('join the consumer group', err)
    }
    return {
      assignment: () => [...assigned],
      stop: async () => {
        this.consumers.delete(handle)
        await consumer.disconnect().catch(() => {})
        if (!failure) settle.resolve()
        await done.catch(() => {})
      },
      done,
    }
  }

  async close(): Promise<void> {
    for (const c of this.consumers) c.fail(new JilError('SYNC_STOPPED', 'the transport was closed'))
    await this.disconnect()
  }
}
