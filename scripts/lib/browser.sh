# Sourced by scripts: ensure_browser makes sure the browser tests (tests/api/browser.rs) can run:
# Debian's chromium and chromium-driver (installed with apt-get when missing and running as
# root), and axe-core from npm, pinned, under target/axe-core. It exports TANDEM_CHROMEDRIVER,
# TANDEM_CHROMIUM and TANDEM_AXE_JS for the tests, and fails loudly when it cannot: the browser
# tests never skip.

TANDEM_AXE_VERSION="${TANDEM_AXE_VERSION:-4.11.0}"

ensure_chromium() {
  if { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "no chromium or chromedriver found; installing Debian's chromium and chromium-driver"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >&2 \
      || { log "FAILED: apt-get install chromium chromium-driver"; exit 1; }
  fi
  command -v chromium >/dev/null 2>&1 \
    || { log "FAILED: the browser tests need chromium on PATH (Debian: apt-get install chromium)"; exit 1; }
  command -v chromedriver >/dev/null 2>&1 \
    || { log "FAILED: the browser tests need chromedriver on PATH (Debian: apt-get install chromium-driver)"; exit 1; }
  export TANDEM_CHROMIUM="$(command -v chromium)"
  export TANDEM_CHROMEDRIVER="$(command -v chromedriver)"
}

ensure_axe() {
  local dir="$PWD/target/axe-core"
  local js="$dir/node_modules/axe-core/axe.min.js"
  local check="$dir/node_modules/axe-core/package.json"
  if ! grep -q "\"version\": \"$TANDEM_AXE_VERSION\"" "$check" 2>/dev/null; then
    command -v npm >/dev/null 2>&1 || { log "FAILED: the accessibility check needs npm to fetch axe-core"; exit 1; }
    log "installing axe-core $TANDEM_AXE_VERSION into $dir"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "axe-core@$TANDEM_AXE_VERSION" >&2 \
      || { log "FAILED: npm install axe-core@$TANDEM_AXE_VERSION"; exit 1; }
  fi
  [ -f "$js" ] || { log "FAILED: $js is missing after installing axe-core"; exit 1; }
  export TANDEM_AXE_JS="$js"
}

ensure_browser() {
  ensure_chromium
  ensure_axe
}
