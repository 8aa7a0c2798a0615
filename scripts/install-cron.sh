#!/usr/bin/env bash
# install-cron.sh: run a node's four agents from cron instead of the daemon (jil.service).
#
#   install-cron.sh [--root DIR] [--state-dir DIR] [--log-dir DIR] [--jil PATH]
#                   [--node-id ID --region R --jurisdiction ZONE] [--hq-url URL]
#                   [--operator ORG] [--redpanda-seeds HOST:PORT,...]
#
# 1. When <state-dir>/node.env does not exist, calls `jil node init` (its one writer) with the
#    given values, else JIL_NODE_ID, JIL_REGION, JIL_JURISDICTION, JIL_HQ_URL, JIL_OPERATOR and
#    REDPANDA_SEEDS from the environment. An existing node.env is left as it is.
# 2. Creates the log dir.
# 3. Writes /etc/cron.d/jil (0644): health every minute, security every 6 h, update every 4 h,
#    maintenance daily at 02:00 UTC (JIL_MAINTENANCE_AT) converted to local time, because Debian's
#    cron reads its schedules in the host's time zone (JIL_CRON_TZ if set; with --root, DIR/etc/timezone or
#    DIR/etc/localtime; else the host's).
#
# Idempotent: a second run changes nothing, byte for byte (the cron file is replaced only when its
# content differs). --root DIR installs under DIR (like DESTDIR): --state-dir, --log-dir and --jil
# are paths as the installed system sees them, and the files land under DIR.
# Bad input: one line on stderr, exit 2, nothing written. The node must still join HQ
# (jil node join); the health run renews its certificate, so a cron-only node never expires.
set -euo pipefail

prog=${0##*/}
usage() {
  printf 'usage: %s [--root DIR] [--state-dir DIR] [--log-dir DIR] [--jil PATH] [--node-id ID] [--region R] [--jurisdiction ZONE] [--hq-url URL] [--operator ORG] [--redpanda-seeds SEEDS]\n' "$prog"
}
die_usage() {
  printf '%s: %s\n' "$prog" "$1" >&2
  exit 2
}
say() { printf '%s\n' "$*"; }

root=/
state_dir=${JIL_STATE_DIR:-/var/lib/jil}
log_dir=${JIL_LOG_DIR:-/var/log/jil}
jil_bin=
node_id=${JIL_NODE_ID:-}
region=${JIL_REGION:-}
jurisdiction=${JIL_JURISDICTION:-}
hq_url=${JIL_HQ_URL:-}
operator=${JIL_OPERATOR:-}
seeds=${REDPANDA_SEEDS:-}
maintenance_at=${JIL_MAINTENANCE_AT:-02:00}

while (($# > 0)); do
  opt=$1
  case $opt in
    -h | --help)
      usage
      exit 0
      ;;
    --root | --state-dir | --log-dir | --jil | --node-id | --region | --jurisdiction | --hq-url | --operator | --redpanda-seeds)
      (($# >= 2)) || die_usage "$opt needs a value (see --help)"
      val=$2
      shift 2
      ;;
    --*=*)
      # --opt=value: split and go round again.
      set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
      continue
      ;;
    *) die_usage "unknown option $opt (see --help)" ;;
  esac
  case $opt in
    --root) root=$val ;;
    --state-dir) state_dir=$val ;;
    --log-dir) log_dir=$val ;;
    --jil) jil_bin=$val ;;
    --node-id) node_id=$val ;;
    --region) region=$val ;;
    --jurisdiction) jurisdiction=$val ;;
    --hq-url) hq_url=$val ;;
    --operator) operator=$val ;;
    --redpanda-seeds) seeds=$val ;;
  esac
done

# ---------------------------------------------------------------- checks (nothing is written before they pass)

for pair in "--root:$root" "--state-dir:$state_dir" "--log-dir:$log_dir"; do
  name=${pair%%:*} path=${pair#*:}
  [[ $path == /* ]] || die_usage "$name must be an absolute path, got '$path'"
  # These go into a line root's cron runs through /bin/sh: only plain path characters.
  [[ $path =~ ^/[A-Za-z0-9._/-]*$ ]] || die_usage "$name may hold only letters, digits and . _ / - (it goes into a cron line): '$path'"
done
root=${root%/}
[[ -d ${root:-/} ]] || die_usage "--root ${root:-/} is not a directory"

if [[ -z $jil_bin ]]; then
  jil_bin=$(command -v jil || true)
  [[ -n $jil_bin ]] || die_usage "jil is not on PATH; pass --jil PATH"
fi
[[ $jil_bin == /* ]] || jil_bin=$(cd "$(dirname -- "$jil_bin")" 2>/dev/null && pwd)/${jil_bin##*/} || die_usage "--jil $jil_bin: no such directory"
[[ $jil_bin =~ ^/[A-Za-z0-9._/-]+$ ]] || die_usage "--jil may hold only letters, digits and . _ / - (it goes into a cron line): '$jil_bin'"
# The binary runs on this machine now (node init) and on the installed system later: check it here.
[[ -f $jil_bin && -x $jil_bin ]] || die_usage "--jil $jil_bin is not an executable file"

[[ $maintenance_at =~ ^([01]?[0-9]|2[0-3]):([0-5][0-9])$ ]] || die_usage "JIL_MAINTENANCE_AT '$maintenance_at' is not HH:MM (UTC)"
utc_h=$((10#${BASH_REMATCH[1]}))
utc_m=$((10#${BASH_REMATCH[2]}))

env_file=$root$state_dir/node.env
if [[ ! -e $env_file ]]; then
  missing=()
  [[ -n $node_id ]] || missing+=(--node-id)
  [[ -n $region ]] || missing+=(--region)
  [[ -n $jurisdiction ]] || missing+=(--jurisdiction)
  ((${#missing[@]} == 0)) || die_usage "no node.env in $root$state_dir and no ${missing[*]} (flags or JIL_NODE_ID, JIL_REGION, JIL_JURISDICTION)"
fi

# The time zone cron will read its schedule in. glibc silently falls back to UTC for a zone it does
# not know, so an unknown name is refused here rather than giving a wrong hour.
tz=
tz_name=
# Not $TZ: the installer's shell may have one, but the cron daemon reads the host's /etc/localtime.
if [[ -n ${JIL_CRON_TZ:-} ]]; then
  tz=$JIL_CRON_TZ tz_name=$JIL_CRON_TZ
elif [[ -n $root ]]; then
  if [[ -s $root/etc/timezone ]]; then
    tz=$(head -n 1 -- "$root/etc/timezone" | tr -d '[:space:]') tz_name=$tz
  elif [[ -L $root/etc/localtime ]]; then
    target=$(readlink -- "$root/etc/localtime")
    tz=${target#*zoneinfo/} tz_name=$tz
  elif [[ -f $root/etc/localtime ]]; then
    tz=":$root/etc/localtime" tz_name=/etc/localtime
  else
    # A bare tree (an image being built) has no zone yet: systemd and Debian default to UTC.
    tz=UTC tz_name=UTC
  fi
else
  if [[ -s /etc/timezone ]]; then
    tz_name=$(head -n 1 /etc/timezone | tr -d '[:space:]')
  elif [[ -L /etc/localtime ]]; then
    target=$(readlink /etc/localtime)
    tz_name=${target#*zoneinfo/}
  else
    tz_name='local time'
  fi
fi
if [[ -n $tz && $tz != :* && $tz != *[0-9]* && ! -f /usr/share/zoneinfo/$tz && $tz != UTC ]]; then
  die_usage "unknown time zone '$tz' (no /usr/share/zoneinfo/$tz; is tzdata installed?)"
fi
in_tz() {
  if [[ -n $tz ]]; then TZ=$tz "$@"; else "$@"; fi
}

today=$(date -u +%F)
year=$(date -u +%Y)
read -r local_h local_m < <(in_tz date -d "$today $(printf '%02d:%02d' "$utc_h" "$utc_m") UTC" '+%H %M')
local_h=$((10#$local_h))
local_m=$((10#$local_m))
off_now=$(in_tz date -d "$today 12:00 UTC" +%z)
off_jan=$(in_tz date -d "$year-01-01 12:00 UTC" +%z)
off_jul=$(in_tz date -d "$year-07-01 12:00 UTC" +%z)

# ---------------------------------------------------------------- node.env

if [[ -e $env_file ]]; then
  say "node.env: $env_file exists, left as it is"
else
  args=(node init --node-id "$node_id" --region "$region" --jurisdiction "$jurisdiction" --state-dir "$root$state_dir")
  [[ -z $hq_url ]] || args+=(--hq "$hq_url")
  [[ -z $operator ]] || args+=(--operator "$operator")
  [[ -z $seeds ]] || args+=(--redpanda-seeds "$seeds")
  # Its validation comes first: a bad value is its error and hint, exit 2, nothing written (its
  # output goes to stderr; ours stays short).
  rc=0
  "$jil_bin" "${args[@]}" >&2 || rc=$?
  ((rc == 0)) || exit "$rc"
  say "node.env: created $env_file (jil node init)"
fi

# ---------------------------------------------------------------- log dir

if [[ -d $root$log_dir ]]; then
  say "log dir: $root$log_dir exists"
else
  mkdir -p -- "$root$log_dir"
  chmod 0755 -- "$root$log_dir"
  say "log dir: created $root$log_dir"
fi

# ---------------------------------------------------------------- /etc/cron.d/jil

# jil's shebang needs node on PATH: add node's directory when it is not among cron's usual ones.
cron_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
node_bin=$(command -v node || true)
if [[ -n $node_bin && ${node_bin%/*} != *[[:space:]]* && ":$cron_path:" != *":${node_bin%/*}:"* ]]; then
  cron_path=${node_bin%/*}:$cron_path
fi

if [[ $off_jan == "$off_jul" ]]; then
  dst_note="# DST: none in $tz_name (UTC offset $off_now all year), so this conversion always holds."
else
  dst_note="# DST: $tz_name changes its UTC offset (winter $off_jan, summer $off_jul); this file was written for $off_now: re-run install-cron.sh after each clock change (or use the daemon, jil.service, which schedules in UTC)."
fi

line() { # NAME SCHEDULE
  printf '%s root %s agent run %s --state-dir %s >> %s/%s.log 2>&1\n' "$2" "$jil_bin" "$1" "$state_dir" "$log_dir" "$1"
}

render() {
  printf '# /etc/cron.d/jil: the jil node agents, written by install-cron.sh (re-run it rather than editing).\n'
  printf '# Cron reads these times in local time (%s); maintenance runs daily at %02d:%02d UTC = %02d:%02d local.\n' "$tz_name" "$utc_h" "$utc_m" "$local_h" "$local_m"
  printf '%s\n' "$dst_note"
  printf 'SHELL=/bin/sh\n'
  printf 'PATH=%s\n' "$cron_path"
  printf '# Maintenance rotates the agents'"'"' logs in this dir.\n'
  printf 'JIL_LOG_DIR=%s\n' "$log_dir"
  printf '# m h dom mon dow user command\n'
  line health '* * * * *'
  line security '0 */6 * * *'
  line update '0 */4 * * *'
  line maintenance "$local_m $local_h * * *"
}

cron_dir=$root/etc/cron.d
cron_file=$cron_dir/jil
tmp=$(mktemp)
staged=
cleanup() {
  rm -f -- "$tmp"
  [[ -z $staged ]] || rm -f -- "$staged"
}
trap cleanup EXIT
render >"$tmp"

if [[ -f $cron_file ]] && cmp -s -- "$tmp" "$cron_file"; then
  say "cron: $cron_file unchanged"
else
  verb=installed
  [[ ! -e $cron_file ]] || verb=updated
  mkdir -p -- "$cron_dir"
  # Staged beside the target and renamed over it: cron never reads half a file. A dot in the name
  # keeps cron from reading the staged file itself (Debian's cron skips such names in cron.d).
  staged=$(mktemp -- "$cron_dir/.jil.XXXXXX")
  cat -- "$tmp" >"$staged"
  chmod 0644 -- "$staged"
  if (($(id -u) == 0)); then chown root:root -- "$staged"; fi
  mv -f -- "$staged" "$cron_file"
  staged=
  say "cron: $cron_file $verb"
fi
say "maintenance: daily at $(printf '%02d:%02d' "$utc_h" "$utc_m") UTC = $(printf '%02d:%02d' "$local_h" "$local_m") $tz_name"
