#!/usr/bin/env bash
# Real services for jil's tests: PostgreSQL, a Docker engine, an OCI registry
# and a busybox test image pushed to that registry. All on loopback / private
# unix sockets, all started and stopped by PID. See DESIGN.md section 8.
#
#   scripts/test-services.sh start    install what is missing, start what is not running
#   scripts/test-services.sh env      print `export` lines: eval "$(scripts/test-services.sh env)"
#   scripts/test-services.sh status   say which services are up (exit 1 if any is down)
#   scripts/test-services.sh stop     stop what `start` started (safe when nothing runs)
#
# Settings (environment):
#   JIL_TEST_SERVICES_DIR   base dir (default: <repo>/.test-services)
#   JIL_TEST_PG_PORT        PostgreSQL port (default 55432; if unset and busy, the next free one)
#   JIL_TEST_REGISTRY_PORT  registry port  (default 55000; if unset and busy, the next free one)
#   JIL_TEST_DOCKER_STORAGE_DRIVER  force a dockerd storage driver (default: dockerd's choice)
#
# Layout: state that must survive lives in $BASE (registry data, docker data-root,
# pid files, env). Things that need a short path (unix sockets: dockerd's socket and
# exec-root) or a path the `postgres` user can reach (the cluster) live in
# /tmp/jil-ts-<hash of $BASE>, recorded in $BASE/runtime-dir.
# Progress goes to stderr; stdout carries only what `env`/`status` print.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BASE=${JIL_TEST_SERVICES_DIR:-$REPO/.test-services}
BASE=$(realpath -m -- "$BASE")
RUN=/tmp/jil-ts-$(printf '%s' "$BASE" | sha256sum | cut -c1-12)

PG_DEFAULT_PORT=55432
REGISTRY_DEFAULT_PORT=55000
IMAGE_REPO=jil/busybox
IMAGE_TAG='test'

# derived paths
PG_ROOT=$RUN/pg
PG_DATA=$PG_ROOT/data
PG_SOCK=$PG_ROOT/sock
PG_LOG=$PG_ROOT/postgres.log
D_SOCK=$RUN/docker.sock
D_EXEC=$RUN/dx
D_DIR=$BASE/docker
D_DATA=$D_DIR/data
D_LOG=$D_DIR/dockerd.log
R_DIR=$BASE/registry
R_CONF=$R_DIR/config.yml
R_LOG=$R_DIR/registry.log
STATE=$BASE/state     # PG_PORT=, REGISTRY_PORT= (shell syntax, sourced)
ENV_FILE=$BASE/env

export DEBIAN_FRONTEND=noninteractive
# Debian puts dockerd, runc and docker-proxy in /usr/sbin; make sure dockerd finds them.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin ;; esac
export PATH
DOCKERD=/usr/sbin/dockerd

log() { printf '[test-services] %s\n' "$*" >&2; }
die() { printf '[test-services] error: %s\n' "$*" >&2; exit 1; }

docker_cli() {
  # Prefer the client shipped with the engine (same API version); any client works.
  local bin=docker
  [[ -x /usr/bin/docker ]] && bin=/usr/bin/docker
  DOCKER_CONFIG=$D_DIR/client-config "$bin" -H "unix://$D_SOCK" "$@"
}

# ---------------------------------------------------------------- helpers

# alive PID: the process exists and is not a zombie (daemons end up children of
# PID 1, which may not reap them here).
alive() {
  local st
  st=$(sed -n 's/^.*) \([A-Za-z]\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# pid_ok PIDFILE PATTERN: the PID in PIDFILE is alive and its command line
# contains PATTERN (guards against a recycled PID).
pid_ok() {
  local f=$1 pat=$2 pid
  [[ -s $f ]] || return 1
  pid=$(head -n1 -- "$f" | tr -dc '0-9')
  [[ -n $pid ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pat"
}

pid_of() { head -n1 -- "$1" 2>/dev/null | tr -dc '0-9'; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port NAME EXPLICIT STORED DEFAULT -> prints a free port
pick_port() {
  local name=$1 explicit=$2 stored=$3 def=$4 p
  if [[ -n $explicit ]]; then
    port_busy "$explicit" && die "$name port $explicit (set explicitly) is already in use"
    echo "$explicit"; return
  fi
  for p in ${stored:+"$stored"} $(seq "$def" $((def + 49))); do
    if ! port_busy "$p"; then echo "$p"; return; fi
  done
  die "no free port for $name in $def..$((def + 49))"
}

save_state() {
  mkdir -p "$BASE"
  {
    printf 'PG_PORT=%q\n' "${PG_PORT:-}"
    printf 'REGISTRY_PORT=%q\n' "${REGISTRY_PORT:-}"
  } >"$STATE.tmp"
  mv -f "$STATE.tmp" "$STATE"
}

load_state() {
  PG_PORT=''; REGISTRY_PORT=''
  # shellcheck disable=SC1090
  [[ -f $STATE ]] && . "$STATE"
  return 0
}

wait_until() { # TIMEOUT_S PID CMD... ; 0 when CMD succeeds, 1 on time-out, 2 if PID died
  local timeout=$1 pid=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    alive "$pid" || return 2
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

pg_bindir() { # the newest /usr/lib/postgresql/<ver>/bin that has the server tools
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
    if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then echo "$d"; return 0; fi
  done
  return 1
}

as_pg() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@" 9>&-)
  else
    (cd / && "$@" 9>&-)
  fi
}

# Unmount anything still mounted under a dir (left by a dockerd that was killed).
umount_under() {
  local prefix=$1 m
  [[ -d $prefix ]] || return 0
  awk -v p="$prefix" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l -- "$m" 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- install

install_missing() {
  local pkgs=()
  pg_bindir >/dev/null || pkgs+=(postgresql)
  command -v psql >/dev/null || pkgs+=(postgresql-client)
  [[ -x $DOCKERD ]] || pkgs+=(docker.io)
  [[ -x /usr/bin/docker-registry ]] || pkgs+=(docker-registry)
  [[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true) == "install ok installed" ]] || pkgs+=(busybox-static)
  [[ -x /usr/sbin/cron ]] || pkgs+=(cron)
  command -v tmux >/dev/null || pkgs+=(tmux)
  command -v curl >/dev/null || pkgs+=(curl)
  [[ -e /usr/share/zoneinfo/Asia/Tokyo ]] || pkgs+=(tzdata)
  ((${#pkgs[@]})) || return 0

  ((EUID == 0)) || die "missing packages (${pkgs[*]}) and not root: install them with apt-get"
  log "installing: ${pkgs[*]}"
  # Keep the packages' own services (system dockerd, registry on :5000, cron, a
  # default PostgreSQL cluster) from starting: we run our own, by PID.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  } </dev/null >&2 || rc=$?
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || die "apt-get install ${pkgs[*]} failed (exit $rc)"
}

# ---------------------------------------------------------------- postgres

pg_up() {
  [[ -n ${PG_PORT:-} ]] || return 1
  pid_ok "$BASE/postgres.pid" "$PG_DATA" &&
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1
}

pg_start() {
  local bin pid
  bin=$(pg_bindir) || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  if pg_up; then log "postgres: already running (pid $(pid_of "$BASE/postgres.pid"), port $PG_PORT)"; else
    # A postmaster of ours may still run without a pid file in $BASE (base dir removed).
    if [[ -f $PG_DATA/postmaster.pid ]] && pid_ok "$PG_DATA/postmaster.pid" "$PG_DATA"; then
      log "postgres: stopping a stale server on $PG_DATA"
      as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >&2 || true
    fi
    # A postmaster.pid left by a killed server whose PID now belongs to another
    # process would make postgres refuse to start.
    if [[ -f $PG_DATA/postmaster.pid ]] && ! pid_ok "$PG_DATA/postmaster.pid" "$PG_DATA"; then
      rm -f -- "$PG_DATA/postmaster.pid"
    fi
    install -d -m 0755 "$RUN"
    install -d -m 0755 -o postgres -g postgres "$PG_ROOT" "$PG_SOCK"
    if [[ -s $PG_DATA/PG_VERSION && $(cat "$PG_DATA/PG_VERSION") != "$(basename "$(dirname "$bin")")" ]]; then
      log "postgres: cluster is from another major version; re-creating it"
      rm -rf -- "$PG_DATA"
    fi
    if [[ ! -s $PG_DATA/PG_VERSION ]]; then
      rm -rf -- "$PG_DATA"
      log "postgres: initdb $PG_DATA"
      as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
        >"$PG_ROOT/initdb.log" 2>&1 || { tail -n 20 "$PG_ROOT/initdb.log" >&2; die "initdb failed"; }
      # A throw-away test cluster: durability off, room for many test connections.
      as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<'EOF'

# --- jil test-services ---
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
EOF
    fi
    load_state
    PG_PORT=$(pick_port postgres "${JIL_TEST_PG_PORT:-}" "${PG_PORT:-}" "$PG_DEFAULT_PORT")
    save_state
    # shared_buffers as a production server would have it (the default 128 MB would leave the
    # benches' 100k-node tables in the OS cache only); memory is taken only as pages are used.
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
      -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c shared_buffers=1GB" start >/dev/null; then
      tail -n 30 "$PG_LOG" >&2 || true
      die "postgres did not start (log: $PG_LOG)"
    fi
    pid=$(head -n1 "$PG_DATA/postmaster.pid")
    echo "$pid" >"$BASE/postgres.pid"
    ln -sfn "$PG_LOG" "$BASE/postgres.log"
    pg_up || die "postgres started (pid $pid) but does not answer on 127.0.0.1:$PG_PORT"
  fi
  if [[ $(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc \
    "select 1 from pg_database where datname = 'jil_test'") != 1 ]]; then
    log "postgres: creating database jil_test"
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'create database jil_test' >/dev/null
  fi
}

pg_stop() {
  local bin
  [[ -f $PG_DATA/postmaster.pid ]] || { rm -f "$BASE/postgres.pid"; return 0; }
  if pid_ok "$PG_DATA/postmaster.pid" "$PG_DATA"; then
    bin=$(pg_bindir) || die "PostgreSQL binaries not found"
    log "postgres: stopping (pid $(pid_of "$PG_DATA/postmaster.pid"))"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
      as_pg "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null || true
  fi
  rm -f "$BASE/postgres.pid"
}

# ---------------------------------------------------------------- docker

docker_up() {
  pid_ok "$BASE/dockerd.pid" "$D_EXEC" && docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1
}

docker_start() {
  if docker_up; then
    log "dockerd: already running (pid $(pid_of "$BASE/dockerd.pid"))"
    return 0
  fi
  if [[ -S $D_SOCK ]] && docker_cli version >/dev/null 2>&1; then
    die "a dockerd answers on $D_SOCK but its pid file $BASE/dockerd.pid is gone; stop it by hand (its pid: ss -xlp | grep $D_SOCK)"
  fi
  # No dockerd of ours runs: clear what a killed one may have left mounted.
  rm -f "$BASE/dockerd.pid" "$D_SOCK"
  umount_under "$D_EXEC"
  umount_under "$D_DATA"
  install -d -m 0755 "$RUN" "$D_EXEC" "$D_DIR" "$D_DATA" "$D_DIR/client-config"
  [[ -f $D_DIR/daemon.json ]] || echo '{}' >"$D_DIR/daemon.json"
  local args=(
    --host "unix://$D_SOCK"
    --data-root "$D_DATA"
    --exec-root "$D_EXEC"
    --pidfile "$BASE/dockerd.pid"
    --config-file "$D_DIR/daemon.json"
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false
    # containers still running at `stop` get this long before SIGKILL (tests' containers are throw-away)
    --shutdown-timeout=3
  )
  [[ -n ${JIL_TEST_DOCKER_STORAGE_DRIVER:-} ]] && args+=(--storage-driver "$JIL_TEST_DOCKER_STORAGE_DRIVER")
  log "dockerd: starting (socket $D_SOCK)"
  printf '\n--- %s start ---\n' "$(date -Is)" >>"$D_LOG"
  setsid "$DOCKERD" "${args[@]}" >>"$D_LOG" 2>&1 </dev/null 9>&- &
  local pid=$! rc=0
  # dockerd writes $BASE/dockerd.pid itself (20.10 refuses to start if the file
  # already names a live process, even its own PID, so it is not written here).
  wait_until 60 "$pid" docker_cli info || rc=$?
  if ((rc)); then
    tail -n 30 "$D_LOG" >&2 || true
    ((rc == 2)) && die "dockerd exited during start-up (log: $D_LOG)"
    die "dockerd did not answer on $D_SOCK within 60 s (log: $D_LOG)"
  fi
  log "dockerd: up (pid $pid, storage driver $(docker_cli info --format '{{.Driver}}' 2>/dev/null))"
}

docker_stop() {
  local pid i
  if pid_ok "$BASE/dockerd.pid" "$D_EXEC"; then
    pid=$(pid_of "$BASE/dockerd.pid")
    log "dockerd: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "dockerd: still running after 30 s, killing"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    fi
    # The containerd that dockerd supervises normally exits with it.
    if pid_ok "$D_EXEC/containerd/containerd.pid" "$D_EXEC"; then
      kill -TERM "$(pid_of "$D_EXEC/containerd/containerd.pid")" 2>/dev/null || true
    fi
  fi
  rm -f "$BASE/dockerd.pid"
  if ! alive "${pid:-0}"; then umount_under "$D_EXEC"; umount_under "$D_DATA"; fi
}

# ---------------------------------------------------------------- registry

registry_up() {
  [[ -n ${REGISTRY_PORT:-} ]] || return 1
  pid_ok "$BASE/registry.pid" "$R_CONF" && curl -fsS -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/v2/"
}

registry_start() {
  if registry_up; then
    log "registry: already running (pid $(pid_of "$BASE/registry.pid"), port $REGISTRY_PORT)"
    return 0
  fi
  load_state
  REGISTRY_PORT=$(pick_port registry "${JIL_TEST_REGISTRY_PORT:-}" "${REGISTRY_PORT:-}" "$REGISTRY_DEFAULT_PORT")
  save_state
  install -d -m 0755 "$R_DIR" "$R_DIR/data"
  cat >"$R_CONF" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $R_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
  log "registry: starting on 127.0.0.1:$REGISTRY_PORT"
  printf '\n--- %s start ---\n' "$(date -Is)" >>"$R_LOG"
  setsid /usr/bin/docker-registry serve "$R_CONF" >>"$R_LOG" 2>&1 </dev/null 9>&- &
  local pid=$! rc=0
  echo "$pid" >"$BASE/registry.pid"
  wait_until 30 "$pid" \
    curl -fsS -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/v2/" || rc=$?
  if ((rc)); then
    tail -n 30 "$R_LOG" >&2 || true
    ((rc == 2)) && die "registry exited during start-up (log: $R_LOG)"
    die "registry did not answer on 127.0.0.1:$REGISTRY_PORT (log: $R_LOG)"
  fi
}

registry_stop() {
  local pid i
  if pid_ok "$BASE/registry.pid" "$R_CONF"; then
    pid=$(pid_of "$BASE/registry.pid")
    log "registry: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$BASE/registry.pid"
}

# ---------------------------------------------------------------- test image

manifest_digest() { # prints sha256:... of $IMAGE_REPO:$IMAGE_TAG in our registry, or fails
  curl -fsS -I -o /dev/null -D - \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
    -H 'Accept: application/vnd.oci.image.index.v1+json' \
    "http://127.0.0.1:$REGISTRY_PORT/v2/$IMAGE_REPO/manifests/$IMAGE_TAG" 2>/dev/null |
    tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *\(sha256:[0-9a-f]\{64\}\)$/\1/p' | grep .
}

image_ensure() {
  local ref="127.0.0.1:$REGISTRY_PORT/$IMAGE_REPO:$IMAGE_TAG" tmp
  if manifest_digest >/dev/null; then
    log "image: $ref already in the registry"
    return 0
  fi
  local bb=/bin/busybox
  [[ -x $bb ]] || die "$bb missing (package busybox-static)"
  log "image: building $ref from $bb"
  tmp=$(mktemp -d "$BASE/image.XXXXXX")
  # merged-/usr layout: /bin, /sbin and /usr/sbin point at /usr/bin, which holds
  # busybox and a link for every applet it has (sh, sleep, env, wget, nc, httpd, ...)
  local r=$tmp/rootfs
  mkdir -p "$r"/{usr/bin,etc,tmp,root,proc,sys,dev,var/www,home}
  ln -s usr/bin "$r/bin"
  ln -s usr/bin "$r/sbin"
  ln -s bin "$r/usr/sbin"
  chmod 1777 "$r/tmp"
  cp "$bb" "$r/usr/bin/busybox"
  # one process instead of a fork per applet (forks are slow here); the links it
  # makes point at the path busybox runs from: /bin/busybox or /usr/bin/busybox
  "$bb" --install -s "$r/usr/bin"
  case $(readlink "$r/usr/bin/sh") in
    /bin/busybox | /usr/bin/busybox) ;;
    *)
      "$bb" --list | while read -r a; do [[ $a == busybox ]] || ln -sfn busybox "$r/usr/bin/$a"; done
      ;;
  esac
  [[ -x $r/usr/bin/sh || -L $r/usr/bin/sh ]] || die "busybox applet links missing in $r"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$r" -cf - . |
    docker_cli import --change 'CMD ["/bin/sh"]' - "$ref" >/dev/null
  rm -rf -- "$tmp"
  log "image: pushing $ref"
  docker_cli push "$ref" >/dev/null
  manifest_digest >/dev/null || die "pushed $ref but the registry does not list it"
}

# ---------------------------------------------------------------- commands

write_env() {
  local digest
  digest=$(manifest_digest) || die "cannot read the digest of $IMAGE_REPO:$IMAGE_TAG from the registry"
  {
    printf 'export JIL_TEST_DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$PG_PORT/jil_test"
    printf 'export DOCKER_HOST=%q\n' "unix://$D_SOCK"
    printf 'export JIL_TEST_DOCKER_HOST=%q\n' "unix://$D_SOCK"
    printf 'export JIL_TEST_REGISTRY=%q\n' "127.0.0.1:$REGISTRY_PORT"
    printf 'export JIL_TEST_IMAGE=%q\n' "127.0.0.1:$REGISTRY_PORT/$IMAGE_REPO:$IMAGE_TAG"
    printf 'export JIL_TEST_IMAGE_DIGEST=%q\n' "$digest"
    printf 'export JIL_TEST_REGISTRY_DATA=%q\n' "$R_DIR/data"
  } >"$ENV_FILE.tmp"
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

lock() { # fd 9; every daemon is started with 9>&- so it does not inherit the lock
  mkdir -p "$BASE"
  exec 9>"$BASE/.lock"
  flock -w 600 9 || die "another test-services run holds $BASE/.lock"
}

cmd_start() {
  local t0=$SECONDS
  install_missing
  lock
  # A fresh base dir (or one that moved) gets a fresh runtime dir.
  if [[ ! -f $BASE/runtime-dir && -d $RUN ]]; then
    if [[ -f $PG_DATA/postmaster.pid ]] && pid_ok "$PG_DATA/postmaster.pid" "$PG_DATA"; then
      log "postgres: a server from an earlier base dir runs on $PG_DATA; stopping it"
      pg_stop
    fi
    if [[ -S $D_SOCK ]] && docker_cli version >/dev/null 2>&1; then
      die "a dockerd from an earlier base dir answers on $D_SOCK; stop it by hand before starting afresh"
    fi
    umount_under "$RUN"
    rm -rf -- "$RUN"
  fi
  install -d -m 0755 "$BASE" "$RUN"
  echo "$RUN" >"$BASE/runtime-dir"
  load_state
  pg_start
  registry_start
  docker_start
  image_ensure
  write_env
  log "all up in $((SECONDS - t0)) s; use: eval \"\$($0 env)\""
}

cmd_stop() {
  if [[ ! -d $BASE && ! -d $RUN ]]; then log "nothing to stop"; return 0; fi
  [[ -d $BASE ]] && lock
  docker_stop
  registry_stop
  pg_stop
  log "stopped"
}

cmd_env() {
  [[ -s $ENV_FILE ]] || die "no $ENV_FILE: run '$0 start' first"
  load_state
  if ! pg_up || ! registry_up || ! docker_up; then
    log "warning: not every service is up; run '$0 start'"
  fi
  cat "$ENV_FILE"
}

cmd_status() {
  load_state
  local down=0
  if pg_up; then
    echo "postgres: up (pid $(pid_of "$BASE/postgres.pid"), 127.0.0.1:$PG_PORT, data $PG_DATA)"
  else echo "postgres: down"; down=1; fi
  if registry_up; then
    echo "registry: up (pid $(pid_of "$BASE/registry.pid"), 127.0.0.1:$REGISTRY_PORT)"
  else echo "registry: down"; down=1; fi
  if docker_up; then
    echo "dockerd:  up (pid $(pid_of "$BASE/dockerd.pid"), unix://$D_SOCK)"
  else echo "dockerd:  down"; down=1; fi
  if ((down == 0)) && manifest_digest >/dev/null; then
    echo "image:    127.0.0.1:$REGISTRY_PORT/$IMAGE_REPO:$IMAGE_TAG@$(manifest_digest)"
  fi
  return "$down"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|env|status" >&2
    exit 2
    ;;
esac
