# Sourced by scripts: start_throwaway_postgres starts a PostgreSQL in a temporary directory on
# a free port, exports DATABASE_URL, and stops and deletes it when the calling shell exits.
# It installs Debian's postgresql package when no server binaries exist and it runs as root.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

find_pg_bin() {
  local dir
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  # Debian keeps the server binaries off PATH.
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return
    fi
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

start_throwaway_postgres() {
  local pg_bin
  pg_bin="$(find_pg_bin)"
  if [ -z "$pg_bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "no PostgreSQL server binaries found; installing Debian's postgresql package"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    pg_bin="$(find_pg_bin)"
  fi
  if [ -z "$pg_bin" ]; then
    log "FAILED: DATABASE_URL is not set and no PostgreSQL server (initdb, pg_ctl) is installed"
    exit 1
  fi
  PG_DIR="$(mktemp -d -t tandem-pg.XXXXXX)"
  local port run_as=()
  port="$(free_port)"
  # Postgres refuses to run as root.
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$PG_DIR"
    run_as=(runuser -u postgres --)
  fi
  trap stop_throwaway_postgres EXIT
  "${run_as[@]}" "$pg_bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; log "FAILED: initdb"; exit 1; }
  # Durability is pointless for a throwaway server; these settings make tests several times faster.
  "${run_as[@]}" "$pg_bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; log "FAILED: pg_ctl start"; exit 1; }
  PG_BIN="$pg_bin"
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "started a throwaway PostgreSQL on port $port ($PG_DIR)"
}

stop_throwaway_postgres() {
  [ -n "${PG_DIR:-}" ] || return 0
  local run_as=()
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}

