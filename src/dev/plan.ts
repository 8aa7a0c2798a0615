import type {Track} from '../shared/manifest.js'
import type {Role} from '../shared/pki.js'
import type {StackSpec} from '../shared/stack-schema.js'
import {ZONES, type Zone} from '../shared/zones.js'

/**
 * What `jil dev` builds, as data: the nodes across the 13 zones, the users, the demo release and
 * its stack. Pure, so the shape of the simulated fleet is tested without starting it.
 */

/** A readable site per zone, in node ids (`CH-ZUG-01`) and regions (`ch-zug`). */
export const ZONE_SITES: Readonly<Record<Zone, {site: string; region: string}>> = {
  'CH/FINMA': {site: 'ZUG', region: 'ch-zug'},
  'AE/FSRA': {site: 'ABU', region: 'ae-abu-dhabi'},
  'SG/MAS': {site: 'SIN', region: 'sg-singapore'},
  'US/FINCEN': {site: 'NYC', region: 'us-new-york'},
  'GB/FCA': {site: 'LON', region: 'gb-london'},
  'DE/BAFIN': {site: 'FRA', region: 'de-frankfurt'},
  'JP/JFSA': {site: 'TYO', region: 'jp-tokyo'},
  'BR/CVM': {site: 'SAO', region: 'br-sao-paulo'},
  'IN/SEBI': {site: 'BOM', region: 'in-mumbai'},
  'AU/ASIC': {site: 'SYD', region: 'au-sydney'},
  'KR/FSC': {site: 'SEL', region: 'kr-seoul'},
  'CA/OSC': {site: 'TOR', region: 'ca-toronto'},
  'HK/SFC': {site: 'HKG', region: 'hk-hong-kong'},
}

export type DevNode = {id: string; zone: Zone; region: string; track: Track}

/** 20 per zone: one machine's worth of daemons in one process (and node ids stay two-digit). */
export const MAX_DEV_NODES = 20 * 13

/**
 * The first `n` nodes: round-robin over the zones (so 13 nodes cover every zone once), numbered per
 * zone. A zone's first node is on mainnet, its second on testnet, its third on devnet, and so on,
 * so every track has nodes once the fleet is large enough.
 */
export function devNodes(n: number): DevNode[] {
  const out: DevNode[] = []
  for (let i = 0; i < n; i++) {
    const zone = ZONES[i % ZONES.length]!
    const round = Math.floor(i / ZONES.length)
    const {site, region} = ZONE_SITES[zone]
    const tracks: readonly Track[] = ['mainnet', 'testnet', 'devnet']
    out.push({id: `${zone.slice(0, 2)}-${site}-${String(round + 1).padStart(2, '0')}`, zone, region, track: tracks[round % tracks.length]!})
  }
  return out
}

/** One user per role; the name is the role, so a bundle's file says what it may do. */
export const DEV_USERS: readonly {name: string; role: Role}[] = [
  {name: 'admin', role: 'admin'},
  {name: 'ops-lead', role: 'ops-lead'},
  {name: 'security-lead', role: 'security-lead'},
  {name: 'ci-pipeline', role: 'ci-pipeline'},
  {name: 'viewer', role: 'viewer'},
]

/** The operator every dev node belongs to (KYC approved). */
export const DEV_OPERATOR = 'dev-operator'

/** The demo image's name in the registry and in manifests. */
export const DEMO_IMAGE = 'jil/demo'

/** The version signed and promoted at first start, and the one left unsigned in the registry for the tour. */
export const DEMO_VERSIONS = {current: 'v1.0', next: 'v1.1'} as const

/**
 * The demo stack: a critical service with a health check and a worker without one. The commands and
 * the health check use only sh, date, sleep and test, and relative paths, so the same spec runs in a
 * busybox container (work dir /) and under the no-container runtime (a work dir per service).
 */
export function demoStack(): StackSpec {
  return {
    services: [
      {
        name: 'api',
        image: DEMO_IMAGE,
        command: ['sh', '-c', 'while true; do date > heartbeat; sleep 2; done'],
        env: {JIL_DEMO_SERVICE: 'api'},
        health: {test: ['CMD-SHELL', 'test -f heartbeat'], interval_s: 3, timeout_s: 3, retries: 3},
        critical: true,
        network: 'none',
        stop_timeout_s: 3,
      },
      {
        name: 'worker',
        image: DEMO_IMAGE,
        command: ['sh', '-c', 'while true; do sleep 5; done'],
        env: {JIL_DEMO_SERVICE: 'worker'},
        critical: false,
        network: 'none',
        grace_s: 1,
        stop_timeout_s: 3,
      },
    ],
  }
}

/** A node's sync database name: `jil_dev_ch_zug_01`. */
export function nodeDatabaseName(nodeId: string): string {
  return `jil_dev_${nodeId.toLowerCase().replace(/-/g, '_')}`
}

export const LOG_DATABASE = 'jil_dev_log'

/** The table each simulated node's services keep and sync (JIL_SYNC_TABLES). */
export const DEMO_TABLE = {name: 'wallet_accounts', spec: 'wallet_accounts:id:version'} as const

export const DEMO_TABLE_SQL = `CREATE TABLE IF NOT EXISTS wallet_accounts (
  id text PRIMARY KEY,
  owner text NOT NULL,
  balance bigint NOT NULL,
  version bigint NOT NULL
)`
