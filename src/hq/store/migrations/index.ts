import type {Migration} from '../../../shared/db/migrate.js'
import m001 from './001_init.sql'
import m002 from './002_audit.sql'
import m003 from './003_identity.sql'
import m004 from './004_releases.sql'
import m005 from './005_key_rotation.sql'
import m006 from './006_node_runtime.sql'
import m007 from './007_fleet_commands.sql'
import m008 from './008_heartbeat_scale.sql'
import m009 from './009_rollouts.sql'
import m010 from './010_config_docs.sql'
import m011 from './011_alerts.sql'
import m012 from './012_webhooks.sql'
import m013 from './013_alert_history.sql'

/** HQ's schema, in order. A new migration is a new NNN_name.sql file added here; applied ones never change. */
export const HQ_MIGRATIONS: readonly Migration[] = [
  {version: 1, name: 'init', sql: m001},
  {version: 2, name: 'audit', sql: m002},
  {version: 3, name: 'identity', sql: m003},
  {version: 4, name: 'releases', sql: m004},
  {version: 5, name: 'key_rotation', sql: m005},
  {version: 6, name: 'node_runtime', sql: m006},
  {version: 7, name: 'fleet_commands', sql: m007},
  {version: 8, name: 'heartbeat_scale', sql: m008},
  {version: 9, name: 'rollouts', sql: m009},
  {version: 10, name: 'config_docs', sql: m010},
  {version: 11, name: 'alerts', sql: m011},
  {version: 12, name: 'webhooks', sql: m012},
  {version: 13, name: 'alert_history', sql: m013},
]
