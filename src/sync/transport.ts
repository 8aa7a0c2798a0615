/** A Transport carries sync events between nodes: RedPanda through kafkajs, or a log in a shared PostgreSQL. */
export interface Transport {
  readonly kind: 'postgres-log' | 'kafka'
  /** Creates the topics that do not exist yet (an existing topic keeps its partitions). Idempotent. */
  ensureTopics(topics: readonly TopicSpec[]): Promise<void>
  /**
   * Appends records durably (resolves once stored: acks from all in-sync replicas). Records with one
   * key go to one partition, in the order given. A retry of a failed call does not store a record
   * twice within the transport's guarantee (the Kafka idempotent producer per producer session; the
   * postgres-log by record id); consumers still de-duplicate by event_id across producer restarts.
   */
  produce(records: readonly ProduceRecord[]): Promise<void>
  /**
   * Joins consumer group `group` on `topics`. On every assignment (join and rebalance) the transport
   * asks `position` where to start each assigned partition and seeks there: the caller keeps offsets
   * (in its own database, committed with what it applied), never the transport.
   */
  consume(o: ConsumeOptions): Promise<Consumer>
  /** The next offset to be written (high-water mark) of every partition of `topics`. */
  endOffsets(topics: readonly string[]): Promise<PartitionOffset[]>
  close(): Promise<void>
}

export type TopicSpec = {name: string; partitions: number}

export type ProduceRecord = {
  topic: string
  key: string
  value: Buffer
  /** A unique id (the event_id): the postgres-log stores a record once per id. */
  id?: string
}

export type TopicPartition = {topic: string; partition: number}

export type PartitionOffset = TopicPartition & {offset: number}

export type ConsumedRecord = {offset: number; key: string; value: Buffer; timestamp: Date}

export type ConsumedBatch = TopicPartition & {records: ConsumedRecord[]}

export type ConsumeOptions = {
  group: string
  topics: readonly string[]
  /** Where to start each newly assigned partition (the next offset to read; 0 = the beginning). */
  position(assigned: readonly TopicPartition[]): Promise<PartitionOffset[]>
  /**
   * Handles one batch of one partition, in offset order. When it resolves, the consumer moves past
   * the batch; when it throws, the consumer stops (the error goes to `done`): nothing is skipped.
   */
  onBatch(batch: ConsumedBatch): Promise<void>
  /**
   * Read-ahead: called with a partition's next batch as soon as it is read, while the batch before it
   * is still in onBatch, so the caller can start work that needs no order (decoding) on it. The same
   * object comes to onBatch later, in order, unless the consumer stops or loses the partition first.
   * Transports call it when more records are already there behind a full batch.
   */
  onFetched?(batch: ConsumedBatch): void
  /** Called with the partitions this member holds after every (re)assignment. */
  onAssignment?(assigned: readonly TopicPartition[]): void
  /** Records per batch at most (default 1000). */
  maxBatch?: number
}

export type Consumer = {
  /** The partitions this member holds now. */
  assignment(): TopicPartition[]
  /** Leaves the group (its partitions go to the other members) and waits for the batch in flight. */
  stop(): Promise<void>
  /** Settles when the consumer stops: resolves after stop(), rejects with a handler's or the transport's error. */
  done: Promise<void>
}

/** Record → partition for `partitions` partitions: Kafka's default partitioner (murmur2 of the key), so both transports place a key alike. */
export function partitionFor(key: string, partitions: number): number {
  return (murmur2(Buffer.from(key)) & 0x7fffffff) % partitions
}

/** murmur2 as the Java client (and kafkajs's DefaultPartitioner) computes it. */
export function murmur2(data: Buffer): number {
  const seed = 0x9747b28c
  const m = 0x5bd1e995
  const r = 24
  const length = data.length
  let h = seed ^ length
  const length4 = length >> 2
  for (let i = 0; i < length4; i++) {
    const i4 = i << 2
    let k = (data[i4]! & 0xff) + ((data[i4 + 1]! & 0xff) << 8) + ((data[i4 + 2]! & 0xff) << 16) + ((data[i4 + 3]! & 0xff) << 24)
    k = Math.imul(k, m)
    k ^= k >>> r
    k = Math.imul(k, m)
    h = Math.imul(h, m)
    h ^= k
  }
  const left = length % 4
  const idx = length & ~3
  if (left === 3) h ^= (data[idx + 2]! & 0xff) << 16
  if (left >= 2) h ^= (data[idx + 1]! & 0xff) << 8
  if (left >= 1) {
    h ^= data[idx]! & 0xff
    h = Math.imul(h, m)
  }
  h ^= h >>> 13
  h = Math.imul(h, m)
  h ^= h >>> 15
  return h | 0
}
