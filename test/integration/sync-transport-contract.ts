import {randomBytes} from 'node:crypto'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {ConsumedBatch, Consumer, PartitionOffset, Transport, TopicPartition} from '../../src/sync/transport.js'
import {until} from '../helpers/wait.js'

/**
 * The one contract every sync transport meets (src/sync/transport.ts), run by one test file per
 * transport: topics, per-key order, caller-kept offsets (seek on every assignment), a group of two
 * members splitting the partitions, rebalance when a member leaves, and a failing handler that
 * loses nothing. Each test works on its own topics, so one transport instance serves the suite.
 */
export type ContractTarget = {
  open(): Promise<Transport>
  cleanup?(): Promise<void>
  /** The transport stores a record once per id even across producer restarts (postgres-log). */
  dedupesById: boolean
  /** The transport reads a partition's batch ahead while another partition's batch is handled (postgres-log; kafka hands over within one fetch). */
  readsAheadAcrossPartitions?: boolean
  /** Broker restart, when the environment provides a way (kafka: JIL_TEST_KAFKA_RESTART). */
  restartBroker?: () => Promise<void>
}

const PARTITIONS = 4

function topicName(what: string): string {
  return `jil.test.${what}_${randomBytes(4).toString('hex')}`
}

/** Offsets as a caller keeps them: the next offset per partition, moved after each handled batch. */
class Positions {
  readonly next = new Map<string, number>()
  get(tp: TopicPartition): number {
    return this.next.get(`${tp.topic}/${tp.partition}`) ?? 0
  }
  position = async (assigned: readonly TopicPartition[]): Promise<PartitionOffset[]> => assigned.map((tp) => ({...tp, offset: this.get(tp)}))
  advance(b: ConsumedBatch): void {
    this.next.set(`${b.topic}/${b.partition}`, b.records.at(-1)!.offset + 1)
  }
}

type Seen = {topic: string; partition: number; offset: number; key: string; value: string; member: string}

function value(key: string, i: number): Buffer {
  return Buffer.from(JSON.stringify({key, i}))
}

export function transportContract(name: string, target: ContractTarget): void {
  describe(`sync transport contract: ${name}`, () => {
    let t: Transport
    const consumers: Consumer[] = []
    beforeAll(async () => {
      t = await target.open()
    })
    afterAll(async () => {
      for (const c of consumers) await c.stop()
      await t?.close()
      await target.cleanup?.()
    })

    async function consumeInto(group: string, topics: string[], seen: Seen[], positions: Positions, member: string, onBatch?: (b: ConsumedBatch) => Promise<void>): Promise<Consumer> {
      const c = await t.consume({
        group,
        topics,
        maxBatch: 7,
        position: positions.position,
        onBatch: async (b) => {
          await onBatch?.(b)
          for (const r of b.records) seen.push({topic: b.topic, partition: b.partition, offset: r.offset, key: r.key, value: r.value.toString(), member})
          positions.advance(b)
        },
      })
      consumers.push(c)
      return c
    }

    /** A lone member of a new group reading `topic` 7 records at a time, with the read-ahead hook. */
    async function consumeAhead(topic: string, positions: Positions, onFetched: (b: ConsumedBatch) => void, onBatch: (b: ConsumedBatch) => Promise<void>): Promise<Consumer> {
      const c = await t.consume({group: `g-${randomBytes(3).toString('hex')}`, topics: [topic], maxBatch: 7, position: positions.position, onFetched, onBatch})
      consumers.push(c)
      return c
    }

    it('creates topics idempotently with their partitions, all empty', async () => {
      const a = topicName('create')
      await t.ensureTopics([{name: a, partitions: PARTITIONS}])
      await t.ensureTopics([{name: a, partitions: PARTITIONS}])
      const ends = await t.endOffsets([a])
      expect(ends).toEqual([0, 1, 2, 3].map((partition) => ({topic: a, partition, offset: 0})))
    })

    it('keeps the order of each key and delivers every record once to a lone member', async () => {
      const topic = topicName('order')
      await t.ensureTopics([{name: topic, partitions: PARTITIONS}])
      const keys = ['acct-1', 'acct-2', 'acct-3', 'acct-4', 'acct-5', 'acct-6']
      let n = 0
      for (let round = 0; round < 4; round++) {
        await t.produce(keys.flatMap((key) => [0, 1, 2].map((j) => ({topic, key, value: value(key, round * 3 + j)}))))
        n += keys.length * 3
      }
      const ends = await t.endOffsets([topic])
      expect(ends.reduce((s, e) => s + e.offset, 0)).toBe(n)
      // Several keys land on several partitions (the partitioner spreads them).
      expect(ends.filter((e) => e.offset > 0).length).toBeGreaterThan(1)

      const seen: Seen[] = []
      await consumeInto(`g-${randomBytes(3).toString('hex')}`, [topic], seen, new Positions(), 'a')
      await until('every record consumed', async () => (seen.length >= n ? true : undefined), 30_000)
      expect(seen).toHaveLength(n)
      for (const key of keys) {
        const is = seen.filter((s) => s.key === key).map((s) => (JSON.parse(s.value) as {i: number}).i)
        expect(is).toEqual([...Array(12).keys()])
        // One key, one partition.
        expect(new Set(seen.filter((s) => s.key === key).map((s) => s.partition)).size).toBe(1)
      }
    })

    it('starts each assigned partition where the caller says, not where the group was', async () => {
      const topic = topicName('seek')
      await t.ensureTopics([{name: topic, partitions: PARTITIONS}])
      await t.produce(['k1', 'k2', 'k3', 'k4', 'k5'].flatMap((key) => [0, 1, 2, 3].map((i) => ({topic, key, value: value(key, i)}))))
      const ends = await t.endOffsets([topic])
      const group = `g-${randomBytes(3).toString('hex')}`
      // First member reads everything; the group's own progress is then at the end.
      const first: Seen[] = []
      const c1 = await consumeInto(group, [topic], first, new Positions(), 'a')
      await until('first pass', async () => (first.length === 20 ? true : undefined), 30_000)
      await c1.stop()
      // The caller's store says: two records back on every non-empty partition.
      const positions = new Positions()
      for (const e of ends) positions.next.set(`${topic}/${e.partition}`, Math.max(0, e.offset - 2))
      const again: Seen[] = []
      await consumeInto(group, [topic], again, positions, 'b')
      const expected = ends.reduce((s, e) => s + Math.min(2, e.offset), 0)
      await until('re-read from the caller offsets', async () => (again.length >= expected ? true : undefined), 30_000)
      expect(again).toHaveLength(expected)
      for (const e of ends) {
        const mine = again.filter((s) => s.partition === e.partition).map((s) => s.offset)
        expect(mine).toEqual(e.offset >= 2 ? [e.offset - 2, e.offset - 1] : e.offset === 1 ? [0] : [])
      }
    })

    it('splits the partitions between two members of a group, then gives all to the one that stays', async () => {
      const topic = topicName('group')
      await t.ensureTopics([{name: topic, partitions: PARTITIONS}])
      const group = `g-${randomBytes(3).toString('hex')}`
      const positions = new Positions()
      const seen: Seen[] = []
      const a = await consumeInto(group, [topic], seen, positions, 'a')
      const b = await consumeInto(group, [topic], seen, positions, 'b')
      await until(
        'both members hold partitions, together all',
        async () => {
          const pa = a.assignment().map((x) => x.partition)
          const pb = b.assignment().map((x) => x.partition)
          return pa.length > 0 && pb.length > 0 && pa.length + pb.length === PARTITIONS && !pa.some((p) => pb.includes(p)) ? true : undefined
        },
        60_000,
      )
      const keys = [...Array(16).keys()].map((i) => `key-${i}`)
      await t.produce(keys.map((key) => ({topic, key, value: value(key, 0)})))
      await until('all of the first wave consumed', async () => (seen.length >= keys.length ? true : undefined), 30_000)
      // Each record went to the member holding its partition, and only once.
      expect(seen).toHaveLength(keys.length)
      expect(new Set(seen.map((s) => s.member))).toEqual(new Set(['a', 'b']))

      await b.stop()
      await until('the staying member holds every partition', async () => (a.assignment().length === PARTITIONS ? true : undefined), 60_000)
      await t.produce(keys.map((key) => ({topic, key, value: value(key, 1)})))
      await until('the second wave consumed', async () => (seen.length >= 2 * keys.length ? true : undefined), 30_000)
      const second = seen.slice(keys.length)
      expect(second).toHaveLength(keys.length)
      expect(new Set(second.map((s) => s.member))).toEqual(new Set(['a']))
      // Nothing of the first wave came again: the stayer started each taken-over partition at the caller's offset.
      expect(second.every((s) => (JSON.parse(s.value) as {i: number}).i === 1)).toBe(true)
    })

    it('hands a partition\'s next batch over (onFetched) while the batch before it is still being handled', async () => {
      const topic = topicName('ahead')
      await t.ensureTopics([{name: topic, partitions: 1}])
      const n = 30
      await t.produce([...Array(n).keys()].map((i) => ({topic, key: 'k', value: value('k', i)})))
      const positions = new Positions()
      const fetched = new Map<number, ConsumedBatch>()
      const arrived = new Map<number, () => void>()
      const handled: ConsumedBatch[] = []
      const c = await consumeAhead(
        topic,
        positions,
        (b) => {
          const first = b.records[0]!.offset
          fetched.set(first, b)
          arrived.get(first)?.()
        },
        async (b) => {
          const last = b.records.at(-1)!.offset
          // A full batch with records behind it: its successor must come to onFetched before this
          // handler returns (it waits for it; a transport that does not read ahead fails here).
          if (b.records.length === 7 && last < n - 1 && !fetched.has(last + 1)) {
            await new Promise<void>((resolve, reject) => {
              const timer = setTimeout(() => reject(new Error(`the batch after offset ${last} was not handed over while it was being handled`)), 10_000)
              arrived.set(last + 1, () => {
                clearTimeout(timer)
                resolve()
              })
            })
          }
          handled.push(b)
          positions.advance(b)
        },
      )
      await Promise.race([
        until('every record handled', async () => (handled.reduce((s, b) => s + b.records.length, 0) >= n ? true : undefined), 30_000),
        c.done.then(() => {
          throw new Error('the consumer stopped')
        }),
      ])
      expect(handled.flatMap((b) => b.records.map((r) => r.offset))).toEqual([...Array(n).keys()])
      // Each batch after the first is the very object handed over ahead (not read a second time).
      expect(handled.slice(1).every((b) => fetched.get(b.records[0]!.offset) === b)).toBe(true)
    })

    it.runIf(Boolean(target.readsAheadAcrossPartitions))('reads the next partition\'s batch while one is handled, and hands each batch over once', async () => {
      const topic = topicName('ahead3')
      await t.ensureTopics([{name: topic, partitions: 3}])
      const keys = [...Array(12).keys()].map((i) => `acct-${i}`)
      await t.produce(keys.flatMap((key) => [...Array(10).keys()].map((i) => ({topic, key, value: value(key, i)}))))
      const ends = await t.endOffsets([topic])
      expect(ends.filter((e) => e.offset > 0).length).toBeGreaterThan(1)
      const positions = new Positions()
      const fetched = new Map<string, ConsumedBatch>()
      const handled: ConsumedBatch[] = []
      let handling: ConsumedBatch | undefined
      let acrossPartitions = 0
      const handedTwice: string[] = []
      await consumeAhead(
        topic,
        positions,
        (b) => {
          const k = `${b.partition}/${b.records[0]!.offset}`
          if (fetched.has(k)) handedTwice.push(k)
          fetched.set(k, b)
          if (handling && handling.partition !== b.partition) acrossPartitions++
        },
        async (b) => {
          handling = b
          // Long enough for the read ahead to come back while this batch is still being handled, and
          // for turns to be cut by the consumer's heartbeat (postgres-log here: every 300 ms) mid-way.
          await new Promise((r) => setTimeout(r, 60))
          handled.push(b)
          positions.advance(b)
          handling = undefined
        },
      )
      await until('every record handled', async () => (handled.reduce((n, b) => n + b.records.length, 0) >= 120 ? true : undefined), 30_000)
      // Each partition in order, each record once.
      for (const e of ends) expect(handled.filter((b) => b.partition === e.partition).flatMap((b) => b.records.map((r) => r.offset))).toEqual([...Array(e.offset).keys()])
      expect(acrossPartitions).toBeGreaterThan(0)
      // A batch handed over ahead is the one handled: never read (and decoded) a second time.
      expect(handedTwice).toEqual([])
      for (const b of handled) {
        const ahead = fetched.get(`${b.partition}/${b.records[0]!.offset}`)
        if (ahead) expect(ahead).toBe(b)
      }
    })

    it('stops on a failing handler without moving past the batch, and a restart gets it again', async () => {
      const topic = topicName('fail')
      await t.ensureTopics([{name: topic, partitions: 1}])
      await t.produce([0, 1, 2].map((i) => ({topic, key: 'k', value: value('k', i)})))
      const positions = new Positions()
      const seen: Seen[] = []
      const group = `g-${randomBytes(3).toString('hex')}`
      const failing = await consumeInto(group, [topic], seen, positions, 'a', async () => {
        throw new Error('apply failed')
      })
      await expect(failing.done).rejects.toThrow(/apply failed/)
      expect(seen).toHaveLength(0)
      await consumeInto(group, [topic], seen, positions, 'b')
      await until('redelivered', async () => (seen.length === 3 ? true : undefined), 60_000)
      expect(seen.map((s) => s.offset)).toEqual([0, 1, 2])
    })

    it.runIf(target.dedupesById)('stores a record once per id, even when a producer sends it again', async () => {
      const topic = topicName('dedupe')
      await t.ensureTopics([{name: topic, partitions: 2}])
      const rec = (i: number) => ({topic, key: `k${i}`, value: value(`k${i}`, i), id: `id-${i}`})
      await t.produce([rec(1), rec(2), rec(1)])
      await t.produce([rec(2), rec(3)])
      const ends = await t.endOffsets([topic])
      expect(ends.reduce((s, e) => s + e.offset, 0)).toBe(3)
    })

    it.runIf(Boolean(target.restartBroker))('goes on after a broker restart without losing what was produced', async () => {
      const topic = topicName('restart')
      await t.ensureTopics([{name: topic, partitions: PARTITIONS}])
      const seen: Seen[] = []
      const positions = new Positions()
      await consumeInto(`g-${randomBytes(3).toString('hex')}`, [topic], seen, positions, 'a')
      await t.produce([0, 1, 2, 3].map((i) => ({topic, key: `k${i}`, value: value(`k${i}`, i)})))
      await until('before the restart', async () => (seen.length === 4 ? true : undefined), 60_000)
      await target.restartBroker!()
      await until('produce after the restart', async () => {
        await t.produce([4, 5, 6, 7].map((i) => ({topic, key: `k${i}`, value: value(`k${i}`, i)})))
        return true
      }, 120_000)
      await until('after the restart', async () => (seen.length >= 8 ? true : undefined), 120_000)
      expect(new Set(seen.map((s) => (JSON.parse(s.value) as {i: number}).i))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7]))
    })
  })
}
