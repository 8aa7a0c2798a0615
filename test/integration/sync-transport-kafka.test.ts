import {execFile} from 'node:child_process'
import {promisify} from 'node:util'

import {describe} from 'vitest'

import {openKafka} from '../../src/sync/transports/kafka.js'
import {transportContract} from './sync-transport-contract.js'

/**
 * The kafkajs transport against real brokers (RedPanda or any Kafka API), the same contract as the
 * postgres-log. No Kafka-API broker installs from this machine's registries, so it runs whenever
 * JIL_TEST_KAFKA_BROKERS (HOST:PORT,…) is set and is reported skipped otherwise. With
 * JIL_TEST_KAFKA_RESTART (a shell command that restarts the brokers and returns once they listen),
 * the broker-restart case runs too. mTLS: JIL_TEST_KAFKA_TLS_{CERT,KEY,CA} (PEM file paths).
 */
const BROKERS = process.env.JIL_TEST_KAFKA_BROKERS
const RESTART = process.env.JIL_TEST_KAFKA_RESTART

describe.runIf(Boolean(BROKERS))('kafkajs transport (JIL_TEST_KAFKA_BROKERS)', () => {
  transportContract('kafka', {
    dedupesById: false,
    async open() {
      const {readFile} = await import('node:fs/promises')
      const tls = process.env.JIL_TEST_KAFKA_TLS_CERT
        ? {cert: await readFile(process.env.JIL_TEST_KAFKA_TLS_CERT, 'utf8'), key: await readFile(process.env.JIL_TEST_KAFKA_TLS_KEY!, 'utf8'), ca: await readFile(process.env.JIL_TEST_KAFKA_TLS_CA!, 'utf8')}
        : undefined
      return openKafka({brokers: BROKERS!.split(','), clientId: 'jil-contract-test', identity: async () => tls, sessionTimeoutMs: 10_000})
    },
    ...(RESTART ? {restartBroker: async () => void (await promisify(execFile)('sh', ['-c', RESTART], {timeout: 120_000}))} : {}),
  })
})
