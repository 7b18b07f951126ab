#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for development and tests.
#
#   scripts/pg.sh start DIR           start (or keep) the cluster living in DIR
#   scripts/pg.sh stop DIR            stop it and remove DIR
#   scripts/pg.sh halt DIR [MODE]     stop the server, keep DIR (MODE: fast,
#                                     the default, or immediate: a crash);
#                                     `start DIR` restarts it on the same port
#   scripts/pg.sh url DIR [DBNAME]    print a postgresql:// URL for it
#
# PG_SERVER_ENV, if set, holds NAME=VALUE words (no spaces inside, one line)
# added to the environment of `pg_ctl start` and so of the server it starts,
# and of nothing else this script runs: tests run the server under
# libfaketime this way. pg_ctl needs them too: `pg_ctl -w` accepts the
# server only once its recorded start time is no more than 2 s before
# pg_ctl's own clock. Preloading libfaketime into this script instead
# breaks it: libfaketime shares its state through a semaphore that the
# first preloaded process creates, owned by that user and gone when it
# exits, and the commands run here as `postgres` could not open it.
#
# DIR holds everything: data/ (the cluster), the unix socket, log (the server
# log), port, and conninfo (a libpq keyword string for the superuser, e.g.
# "host=DIR port=PORT user=postgres dbname=postgres"). The server listens on
# 127.0.0.1 on a free port too, with trust authentication: it is for tests
# only and must never hold real data.
#
# PostgreSQL refuses to run as root, and CI runs as root: then initdb and
# pg_ctl run as the `postgres` user (from the postgresql package) on a DIR it
# owns, and every parent of DIR must be traversable by it.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
START_TIMEOUT_S=60
STOP_TIMEOUT_S=60

die() {
  echo "pg.sh: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start DIR | stop DIR | halt DIR [fast|immediate] | url DIR [DBNAME]" >&2
  exit 2
}

# Runs a PostgreSQL binary as the user that owns the cluster.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

superuser_name() {
  if [[ $(id -u) -eq 0 ]]; then echo postgres; else id -un; fi
}

# Absolute path without requiring it to exist. Characters that would need
# quoting in a conninfo string, a URL or postgresql.conf are refused rather
# than escaped in three different dialects.
resolve_dir() {
  local dir=$1
  [[ -n $dir ]] || die "DIR must not be empty"
  dir=$(realpath -m -- "$dir")
  [[ $dir != / ]] || die "refusing to use / as DIR"
  if [[ $dir =~ [[:space:]\'\"\\\%\&\?\#] ]]; then
    die "DIR '$dir' contains a space, quote, backslash or one of %&?#; choose a plain path"
  fi
  # The socket path is DIR/.s.PGSQL.NNNNN and must fit sun_path (107 bytes).
  if (( ${#dir} + 18 > 107 )); then
    die "DIR '$dir' is too long for a unix socket path (max 89 characters)"
  fi
  echo "$dir"
}

is_running() {
  local dir=$1
  [[ -f $dir/data/PG_VERSION ]] || return 1
  as_owner "$PG_BIN/pg_ctl" status -D "$dir/data" >/dev/null 2>&1
}

# A port nobody listens on right now. Another process may still take it
# before the server binds; start_server retries with a new one then.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
    return
  fi
  local port i
  for ((i = 0; i < 100; i++)); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "found no free TCP port on 127.0.0.1"
}

# Fails with the first ancestor the postgres user cannot enter, because the
# server's own error ("could not change directory") does not say which.
check_traversable() {
  local dir=$1 p="" part
  local IFS=/ -
  set -f
  for part in $dir; do
    [[ -n $part ]] || continue
    p="$p/$part"
    [[ -e $p ]] || break
    if ! runuser -u postgres -- test -x "$p"; then
      die "the postgres user cannot enter '$p' (needed to reach '$dir'); pick a DIR under /tmp or make '$p' traversable (chmod o+x)"
    fi
  done
}

init_cluster() {
  local dir=$1
  # --no-sync: initdb's own fsync only protects a cluster we would throw away
  # anyway; the running server keeps fsync on.
  as_owner "$PG_BIN/initdb" -D "$dir/data" --username="$(superuser_name)" --auth=trust \
    --encoding=UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
    die "initdb failed, see $dir/initdb.log: $(tail -n 3 "$dir/initdb.log" | tr '\n' ' ')"
  # Settings live in the cluster, so a restart with plain pg_ctl keeps them;
  # only the port is passed at start (it is chosen anew each time).
  as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF

# --- scripts/pg.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = on
max_connections = 200
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

start_server() {
  local dir=$1 port attempt log_size word
  local -a server_env=()
  if [[ -n ${PG_SERVER_ENV:-} ]]; then
    [[ $PG_SERVER_ENV != *$'\n'* ]] || die "PG_SERVER_ENV must be one line"
    read -r -a server_env <<<"$PG_SERVER_ENV"
    for word in "${server_env[@]}"; do
      [[ $word =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "PG_SERVER_ENV: '$word' is not NAME=VALUE"
    done
  fi
  for attempt in 1 2 3 4 5; do
    # A restarted cluster keeps its port, so that its clients (whose
    # connection strings name the port) reconnect to it.
    if [[ $attempt -eq 1 && -f $dir/port ]]; then
      port=$(cat "$dir/port")
    else
      port=$(free_port)
    fi
    log_size=$(stat -c %s "$dir/log" 2>/dev/null || echo 0)
    # 9>&-: the server must not inherit the start lock, or it would hold it
    # for its whole life.
    if as_owner env "${server_env[@]}" "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/log" -w -t "$START_TIMEOUT_S" \
      -o "-p $port" >/dev/null 2>&1 9>&-; then
      echo "$port"
      return
    fi
    # Another process took the port between free_port and bind: try another.
    if tail -c +"$((log_size + 1))" "$dir/log" 2>/dev/null | grep -q 'could not bind'; then
      continue
    fi
    die "the server did not start within ${START_TIMEOUT_S}s, see $dir/log: $(tail -n 3 "$dir/log" | tr '\n' ' ')"
  done
  die "the server did not start after $attempt attempts (ports taken), see $dir/log"
}

# The port the running server actually uses, from its pid file (line 4).
running_port() {
  sed -n 4p "$1/data/postmaster.pid"
}

write_conninfo() {
  local dir=$1 port=$2
  echo "$port" >"$dir/port.tmp"
  mv -f "$dir/port.tmp" "$dir/port"
  echo "host=$dir port=$port user=$(superuser_name) dbname=postgres" >"$dir/conninfo.tmp"
  mv -f "$dir/conninfo.tmp" "$dir/conninfo"
}

cmd_start() {
  local dir
  dir=$(resolve_dir "$1")
  [[ -x $PG_BIN/pg_ctl ]] || die "no PostgreSQL 15 at $PG_BIN (apt-get install postgresql-15)"
  mkdir -p -- "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres user (apt-get install postgresql-15)"
    chown postgres: -- "$dir"
    # The socket lives here: clients running as other users must enter DIR.
    # The cluster itself (DIR/data) is 0700, as initdb makes it.
    chmod 0755 -- "$dir"
    check_traversable "$dir"
  fi

  # Two concurrent starts of the same DIR (e.g. parallel test fixtures) must
  # not both run initdb.
  exec 9>"$dir/.lock"
  flock -w "$START_TIMEOUT_S" 9 || die "another pg.sh holds $dir/.lock"

  if is_running "$dir"; then
    write_conninfo "$dir" "$(running_port "$dir")"
    echo "pg.sh: already running in $dir on port $(cat "$dir/port")" >&2
    return
  fi
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    rm -rf -- "$dir/data"
    init_cluster "$dir"
  fi
  local port
  port=$(start_server "$dir")
  write_conninfo "$dir" "$port"
  echo "pg.sh: started in $dir on port $port" >&2
}

cmd_stop() {
  local dir
  dir=$(resolve_dir "$1")
  [[ -e $dir ]] || return 0
  # rm -rf on a path from the command line: only on what this script made.
  if [[ -n $(ls -A -- "$dir") && ! -f $dir/data/PG_VERSION && ! -f $dir/conninfo && ! -f $dir/.lock ]]; then
    die "'$dir' does not look like a pg.sh directory; not removing it"
  fi
  if is_running "$dir"; then
    if ! as_owner "$PG_BIN/pg_ctl" stop -D "$dir/data" -m fast -w -t "$STOP_TIMEOUT_S" >/dev/null 2>&1; then
      echo "pg.sh: fast shutdown timed out, stopping immediately" >&2
      as_owner "$PG_BIN/pg_ctl" stop -D "$dir/data" -m immediate -w -t "$STOP_TIMEOUT_S" >/dev/null 2>&1 ||
        die "could not stop the server in $dir"
    fi
  fi
  rm -rf -- "$dir"
}

cmd_halt() {
  local dir mode=${2:-fast}
  dir=$(resolve_dir "$1")
  [[ $mode == fast || $mode == immediate ]] || die "halt mode must be fast or immediate, not '$mode'"
  is_running "$dir" || return 0
  as_owner "$PG_BIN/pg_ctl" stop -D "$dir/data" -m "$mode" -w -t "$STOP_TIMEOUT_S" >/dev/null 2>&1 ||
    die "could not stop the server in $dir"
}

cmd_url() {
  local dir db=${2:-postgres}
  dir=$(resolve_dir "$1")
  [[ -f $dir/port ]] || die "no cluster in $dir (run: $0 start $dir)"
  [[ $db =~ ^[A-Za-z0-9_.-]+$ ]] || die "database name '$db' needs URL escaping; use conninfo instead"
  echo "postgresql://$(superuser_name)@/$db?host=$dir&port=$(cat "$dir/port")"
}

[[ $# -ge 2 ]] || usage
case $1 in
  start) [[ $# -eq 2 ]] || usage; cmd_start "$2" ;;
  stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
  halt) [[ $# -le 3 ]] || usage; cmd_halt "$2" "${3:-}" ;;
  url) [[ $# -le 3 ]] || usage; cmd_url "$2" "${3:-}" ;;
  *) usage ;;
esac
