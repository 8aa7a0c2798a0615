import {readFile, statfs} from 'node:fs/promises'
import {hostname} from 'node:os'
import {dirname} from 'node:path'

import {JilError, systemCode} from '../shared/errors.js'

/**
 * The hardware report a node sends at join (the `hardware` of POST /v1/node/join). It is
 * SELF-REPORTED: the machine says what it is, nothing attests it (no TPM quote), so HQ can hold it
 * to minimums and spot one machine joining twice, but a hostile host can lie in it.
 */
export type HardwareReport = {
  /** /etc/machine-id (the OS installation's id), else the firmware's system UUID. */
  machine_id: string
  /** The SMBIOS system UUID, when the firmware reports a real one (VMs and containers often do not). */
  system_uuid?: string
  hostname?: string
  /** Logical CPU cores. */
  cpu_cores: number
  memory_bytes: number
  /** Size of the filesystem holding the state dir (see below). */
  disk_bytes: number
}

const MACHINE_ID_FILES = ['/etc/machine-id', '/var/lib/dbus/machine-id']

/**
 * Measures this machine. `disk_bytes` is the size of the filesystem that holds the state dir,
 * not the sum of every mounted disk: that is where the node keeps its data, it is measurable in
 * a container (whose root is an overlay the sum would skip or double count), and it cannot be
 * inflated by mounting unrelated disks.
 */
export async function hardwareReport(o: {stateDir: string}): Promise<HardwareReport> {
  const si = await import('systeminformation')
  const [system, cpu, mem, machineId, disk] = await Promise.all([si.system(), si.cpu(), si.mem(), readMachineId(), filesystemSize(o.stateDir)])
  const uuid = realUuid(system.uuid)
  const id = machineId ?? uuid
  if (!id) {
    throw new JilError('MACHINE_ID_MISSING', 'this machine has no /etc/machine-id and its firmware reports no system UUID', {
      hint: 'create one with systemd-machine-id-setup (or dbus-uuidgen --ensure=/etc/machine-id) and join again',
    })
  }
  const host = hostname()
  return {
    machine_id: id,
    ...(uuid ? {system_uuid: uuid} : {}),
    ...(host ? {hostname: host} : {}),
    cpu_cores: cpu.cores,
    memory_bytes: mem.total,
    disk_bytes: disk,
  }
}

async function readMachineId(): Promise<string | undefined> {
  for (const path of MACHINE_ID_FILES) {
    try {
      const id = (await readFile(path, 'utf8')).trim().toLowerCase()
      if (/^[0-9a-f]{32}$/.test(id)) return id
    } catch {
      // not there: try the next one
    }
  }
  return undefined
}

/** Firmware UUIDs that identify nothing: empty, placeholders, all zeros or all ones. */
function realUuid(raw: string | undefined): string | undefined {
  const u = (raw ?? '').trim().toLowerCase()
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(u)) return undefined
  const hex = u.replace(/-/g, '')
  if (/^0+$/.test(hex) || /^f+$/.test(hex)) return undefined
  return u
}

/** Size in bytes of the filesystem holding `path` (or its nearest existing ancestor). */
async function filesystemSize(path: string): Promise<number> {
  for (let p = path; ; p = dirname(p)) {
    try {
      const s = await statfs(p)
      return s.blocks * s.bsize
    } catch (err) {
      if (systemCode(err) !== 'ENOENT' || dirname(p) === p) throw err
    }
  }
}
