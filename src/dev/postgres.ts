import {execFile, spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {chown, mkdir, readFile, readdir, rm, stat, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'
import {promisify} from 'node:util'

import {JilError, messageOf} from '../shared/errors.js'
import {exists, readSecret, writeSecret} from '../shared/files.js'
import {redactUrl} from '../shared/db/pg.js'
import {pickPort} from './services.js'

/**
 * The PostgreSQL that event sync needs in `jil dev` (the postgres-log transport, DESIGN.md §8): a
 * server given by URL, or a private cluster of Debian's binaries under the data dir, started on a
 * free loopback port with a generated password and stopped at the end. initdb and postgres refuse
 * to run as root: as root they run as the `postgres` user (runuser), as test-services.sh does.
 */

const run = promisify(execFile)

export type DevPostgres = {
  kind: 'external' | 'private'
  /** The server's URL with `database` as its database. */
  urlFor(database: string): string
  /** Creates the databases that do not exist yet. */
  ensureDatabases(names: readonly string[]): Promise<void>
  stop(): Promise<void>
}

/** The newest /usr/lib/postgresql/<ver>/bin with initdb, pg_ctl and postgres; undefined without one. */
export async function postgresBinDir(root = '/usr/lib/postgresql'): Promise<string | undefined> {
  let versions: string[]
  try {
    versions = await readdir(root)
  } catch {
    return undefined
  }
  for (const v of versions.sort((a, b) => Number(b) - Number(a) || (a < b ? 1 : -1))) {
    const bin = join(root, v, 'bin')
    if ((await exists(join(bin, 'initdb'))) && (await exists(join(bin, 'pg_ctl'))) && (await exists(join(bin, 'postgres')))) return bin
  }
  return undefined
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

async function ensureDatabasesAt(url: string, names: readonly string[]): Promise<void> {
  const pg = (await import('pg')).default
  const c = new pg.Client({connectionString: url, application_name: 'jil-dev', connectionTimeoutMillis: 10_000})
  c.on('error', () => {})
  try {
    await c.connect()
  } catch (err) {
    throw new JilError('DB_UNREACHABLE', `cannot connect to PostgreSQL at ${redactUrl(url)}: ${messageOf(err)}`, {hint: 'check --database-url (JIL_DEV_DATABASE_URL) and that the server runs', cause: err})
  }
  try {
    const {rows} = await c.query<{datname: string}>('SELECT datname FROM pg_database WHERE datname = ANY($1::text[])', [[...names]])
    const have = new Set(rows.map((r) => r.datname))
    for (const name of names) {
      if (have.has(name)) continue
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new JilError('INTERNAL', `bad database name ${name}`)
      await c.query(`CREATE DATABASE ${name}`).catch((err: unknown) => {
        // Another process created it meanwhile: what was wanted.
        if ((err as {code?: string}).code !== '42P04') throw err
      })
    }
  } finally {
    await c.end().catch(() => {})
  }
}

/** A server the user gave: databases are created on it (by name) when missing, nothing is stopped. */
export async function externalPostgres(url: string): Promise<DevPostgres> {
  try {
    new URL(url)
  } catch {
    throw new JilError('DATABASE_URL_INVALID', '--database-url is not a URL', {hint: 'e.g. postgres://user:pass@127.0.0.1:5432/postgres', exit: 2})
  }
  await ensureDatabasesAt(url, [])
  return {kind: 'external', urlFor: (db) => withDatabase(url, db), ensureDatabases: (names) => ensureDatabasesAt(url, names), stop: async () => {}}
}

type PgUser = {uid: number; gid: number}

async function postgresUser(): Promise<PgUser | undefined> {
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '')
  const line = passwd.split('\n').find((l) => l.startsWith('postgres:'))
  if (!line) return undefined
  const [, , uid, gid] = line.split(':')
  return {uid: Number(uid), gid: Number(gid)}
}

/** Can a user that is neither owner nor group member reach `dir` (every ancestor searchable by others)? */
async function reachableByOthers(dir: string): Promise<boolean> {
  for (let p = dir; ; p = dirname(p)) {
    const st = await stat(p).catch(() => undefined)
    if (st && (st.mode & 0o001) === 0) return false
    if (dirname(p) === p) return true
  }
}

/**
 * Starts (creating it the first time) a private cluster for the dev fleet: under DIR when the
 * postgres user can reach it, else (root with a private data dir) under /tmp/jil-dev-pg-<hash>,
 * recorded in DIR. Undefined when the PostgreSQL server binaries are not installed.
 */
export async function privatePostgres(o: {dir: string; progress: (l: string) => void}): Promise<DevPostgres | undefined> {
  const bin = await postgresBinDir()
  if (!bin) return undefined
  const root = process.getuid?.() === 0
  const pgUser = root ? await postgresUser() : undefined
  if (root && !pgUser) return undefined
  await mkdir(o.dir, {recursive: true, mode: 0o700})
  let clusterRoot = o.dir
  if (root && !(await reachableByOthers(o.dir))) {
    const {createHash} = await import('node:crypto')
    clusterRoot = `/tmp/jil-dev-pg-${createHash('sha256').update(o.dir).digest('hex').slice(0, 12)}`
    await writeFile(join(o.dir, 'cluster-location'), `${clusterRoot}\n`)
  }
  const data = join(clusterRoot, 'data')
  const sock = join(clusterRoot, 'sock')
  const logFile = join(clusterRoot, 'postgres.log')
  const asPg = async (cmd: string, args: string[]): Promise<void> => {
    const [file, argv] = root ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
    try {
      await run(file, argv, {cwd: '/', timeout: 120_000})
    } catch (err) {
      const out = `${(err as {stderr?: string}).stderr ?? ''}`.trim().split('\n').slice(-3).join(' ')
      throw new JilError('POSTGRES_FAILED', `${cmd.split('/').pop()} failed: ${out || messageOf(err)}`, {hint: `see ${logFile}; or pass --database-url to use another server`, cause: err})
    }
  }
  const own = async (p: string) => {
    if (pgUser) await chown(p, pgUser.uid, pgUser.gid)
  }
  await mkdir(clusterRoot, {recursive: true, mode: 0o700})
  await mkdir(sock, {recursive: true, mode: 0o700})
  await own(clusterRoot)
  await own(sock)

  const passwordFile = join(o.dir, 'password')
  if ((await exists(join(data, 'PG_VERSION'))) && !(await exists(passwordFile))) {
    // A cluster whose data dir was deleted (its password with it): nobody can use it, so it is made anew.
    await asPg(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop']).catch(() => {})
    await rm(data, {recursive: true, force: true})
  }
  if (!(await exists(join(data, 'PG_VERSION')))) {
    o.progress('creating a private PostgreSQL cluster for event sync')
    await rm(data, {recursive: true, force: true})
    const password = randomBytes(18).toString('base64url')
    await writeSecret(passwordFile, password)
    // initdb reads the password from a file the postgres user can read; it is removed at once.
    const pwfile = join(clusterRoot, `.pw-${randomBytes(4).toString('hex')}`)
    await writeFile(pwfile, password + '\n', {mode: 0o600})
    await own(pwfile)
    try {
      await asPg(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C', '--no-sync'])
    } finally {
      await rm(pwfile, {force: true})
    }
    // A throw-away dev cluster: durability off, room for every node's sync connections, small buffers.
    const conf = ['', '# --- jil dev ---', 'fsync = off', 'synchronous_commit = off', 'full_page_writes = off', 'max_connections = 500', 'shared_buffers = 64MB', 'wal_level = minimal', 'max_wal_senders = 0', 'max_wal_size = 64MB', 'min_wal_size = 32MB', 'log_min_messages = warning', ''].join('\n')
    const confPath = join(data, 'postgresql.conf')
    await writeFile(confPath, (await readFile(confPath, 'utf8')) + conf)
  }
  const password = (await readSecret(passwordFile, 'dev PostgreSQL password')).trim()

  // A server a crashed run left running is taken as it is (its port is in postmaster.pid).
  let port: number | undefined
  const pidText = await readFile(join(data, 'postmaster.pid'), 'utf8').catch(() => '')
  if (pidText) {
    const status = await asPg(join(bin, 'pg_ctl'), ['-D', data, 'status']).then(
      () => true,
      () => false,
    )
    if (status) port = Number(pidText.split('\n')[3])
  }
  if (!port) {
    port = await pickPort(undefined)
    o.progress(`starting PostgreSQL on 127.0.0.1:${port}`)
    // Detached: pg_ctl's server must not share the terminal's process group (a Ctrl-C would stop it mid-shutdown).
    await new Promise<void>((resolve, reject) => {
      const [file, argv] = root ? ['runuser', ['-u', 'postgres', '--', join(bin, 'pg_ctl')]] : [join(bin, 'pg_ctl'), []]
      const child = spawn(file, [...argv, '-D', data, '-l', logFile, '-w', '-t', '60', '-o', `-p ${port} -k ${sock} -c listen_addresses=127.0.0.1`, 'start'], {cwd: '/', detached: true, stdio: 'ignore'})
      child.once('error', reject)
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new JilError('POSTGRES_FAILED', `PostgreSQL did not start (pg_ctl exit ${code})`, {hint: `see ${logFile}; or pass --database-url`}))))
    })
  }
  const base = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
  let stopped = false
  return {
    kind: 'private',
    urlFor: (db) => withDatabase(base, db),
    ensureDatabases: (names) => ensureDatabasesAt(base, names),
    stop: async () => {
      if (stopped) return
      stopped = true
      await asPg(join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', '-t', '60', 'stop'])
    },
  }
}

