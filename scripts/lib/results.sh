# Sourced by the bench scripts: machine-readable results beside the printed ones.
#
# A script collects records (one JSON object a line) with `record`, then `write_results NAME`
# writes target/bench-results/NAME.json (BENCH_RESULTS_DIR, else $CARGO_TARGET_DIR/bench-results,
# overrides the directory) and prints its path. The file holds the script's name and
# arguments, when it finished, the git commit, the number of CPUs, the data file and its
# sha256 when one was read, and the records in the order they were made. The docs quote these
# files, not figures copied by hand.

# start_results ARGS...: starts a record file for this run (call once, with the script's "$@").
start_results() {
  RESULTS_RECORDS="$(mktemp -t tandem-results.XXXXXX)"
  RESULTS_ARGS=("$@")
}

# record KEY=VALUE...: appends one record. Values that read as numbers (1,234 included) become
# JSON numbers, values that parse as JSON objects or arrays are embedded, KEY=@FILE embeds the
# JSON in FILE, the rest are strings.
record() {
  python3 - "$@" >>"$RESULTS_RECORDS" <<'PY'
import json, math, re, sys
def value(text):
    if text.startswith("@"):
        with open(text[1:]) as f:
            return json.load(f)
    plain = text.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+", text) else text
    for convert in (int, float):
        try:
            number = convert(plain)
            if math.isfinite(number):
                return number
        except ValueError:
            pass
    if text[:1] and text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text
print(json.dumps({k: value(v) for k, v in (a.split("=", 1) for a in sys.argv[1:])}))
PY
}

# wrk_ms VALUE: a wrk duration ("850.00us", "3.54ms", "1.20s", "2.00m") in milliseconds.
wrk_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else if (v ~ /m$/) { sub(/m$/, "", v); print v * 60000 }
    else print v }'
}

# write_results NAME [DATA_FILE]: writes the JSON file and prints its path.
write_results() {
  local name="$1" data="${2:-}" dir out
  dir="${BENCH_RESULTS_DIR:-${CARGO_TARGET_DIR:-target}/bench-results}"
  mkdir -p "$dir"
  out="$dir/$name.json"
  python3 scripts/lib/write-results.py "$name" "$RESULTS_RECORDS" "$out" "$data" \
    "$(git rev-parse HEAD 2>/dev/null || true)" "$(git status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)" \
    "${RESULTS_ARGS[@]}"
  rm -f "$RESULTS_RECORDS"
  echo
  echo "results: $out"
}
