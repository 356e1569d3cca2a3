# Sourced by scripts: start_throwaway_redis starts a redis-server on a free port in a temporary
# directory (no persistence) and exports REDIS_URL; stop_throwaway_redis stops and deletes it.
# It installs Debian's redis-server package when no binary exists and it runs as root; when
# there is still none, it fails loudly: the Redis tests never skip.

start_throwaway_redis() {
  if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "no redis-server found; installing Debian's redis-server package"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2 || true
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "FAILED: REDIS_URL is not set and no redis-server could be installed (run as root with apt-get, or set REDIS_URL)"
    exit 1
  fi
  REDIS_DIR="$(mktemp -d -t tandem-redis.XXXXXX)"
  local port
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" >/dev/null \
    || { log "FAILED: redis-server did not start"; exit 1; }
  local waited=0
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    waited=$((waited + 1))
    [ "$waited" -lt 100 ] || { cat "$REDIS_DIR/redis.log" >&2; log "FAILED: redis-server never answered"; exit 1; }
    sleep 0.05
  done
  export REDIS_URL="redis://127.0.0.1:$port"
  log "started a throwaway Redis on port $port ($REDIS_DIR)"
}

stop_throwaway_redis() {
  [ -n "${REDIS_DIR:-}" ] || return 0
  if [ -f "$REDIS_DIR/redis.pid" ]; then
    kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$REDIS_DIR"
}
