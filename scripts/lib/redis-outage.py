"""Takes Redis away under a fixed request rate and measures what the clients of a running
Tandem server see: the latency of GET /recommendations with a shopper id on every request in
the first second of the outage and over all of it, and, once Redis is back, how long until
capping works again. Prints one JSON line. Used by scripts/hostile-bench.

Usage: redis-outage.py PORT REDIS_PORT REDIS_DIR RATE MODE URLS [SECONDS]
  PORT: the server's port; it uses the Redis on REDIS_PORT as its cap store (a throwaway one:
  this script stops it). REDIS_DIR holds its redis.pid, and is where it is started again.
  RATE: requests a second (oha -q, corrected for coordinated omission). MODE: "kill" (SIGKILL,
  then a new redis-server on the same port with no data) or "hang" (SIGSTOP, then SIGCONT: the
  socket stays open and calls time out). URLS: one URL a line, for oha. SECONDS: how long Redis
  is away (default 5).

Capping is back when a "not interested" sent after Redis returned keeps the item out of the
next list for the same shopper: one POST /events and one GET /recommendations every 20 ms,
each through the breaker like any request. The breaker's state (tandem_capping_breaker_state,
0 closed) is read at the same time.
"""
import csv, json, os, signal, subprocess, sys, time, urllib.request

port, redis_port, redis_dir, rate, mode, urls = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
away = float(sys.argv[7]) if len(sys.argv) > 7 else 5.0
base = f"http://127.0.0.1:{port}"
before_s, after_s = 4.0, 8.0
total_s = int(before_s + away + after_s)


def get_json(path):
    with urllib.request.urlopen(base + path, timeout=5) as answer:
        return json.load(answer)


def post_events(events):
    request = urllib.request.Request(base + "/events", data=json.dumps(events).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.status


def metric(name):
    with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def recommendations_answered():
    with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
        return sum(float(line.split()[-1]) for line in answer.read().decode().splitlines()
                   if line.startswith("tandem_http_requests_total{")
                   and 'route="/recommendations"' in line)


def redis_pid():
    with open(os.path.join(redis_dir, "redis.pid")) as f:
        return int(f.read().strip())


def redis_answers():
    return subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True,
                          text=True, timeout=2).stdout.strip() == "PONG"


def start_redis():
    subprocess.run(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--dir", redis_dir,
                    "--pidfile", os.path.join(redis_dir, "redis.pid"),
                    "--logfile", os.path.join(redis_dir, "redis.log")], check=True,
                   capture_output=True)


# The probe: a shopper of its own and a cart whose first recommendation it will dismiss.
probe_user = f"outage-probe-{rate}-{mode}-{os.getpid()}"
cart = "S0000001,S0000002"
list_path = f"/recommendations?k=10&cart={cart}&user={probe_user}"
item = get_json(list_path)["items"][0]["item_id"]

csv_path = os.path.join(redis_dir, f"oha-{rate}-{mode}.csv")
with open(csv_path, "w") as out:
    answered = recommendations_answered()
    oha = subprocess.Popen(["oha", "-z", f"{total_s}s", "-q", str(rate), "-c", "64",
                            "--latency-correction", "--no-tui", "--output-format", "csv",
                            "--urls-from-file", urls], stdout=out, stderr=subprocess.DEVNULL)
    # oha times requests from its own start, after it has read the URLs: take that as the
    # moment its first request arrives (to within a few milliseconds).
    while recommendations_answered() == answered:
        time.sleep(0.002)
    started = time.monotonic()
    time.sleep(before_s)
    pid = redis_pid()
    gone = time.monotonic() - started
    os.kill(pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
    time.sleep(away)
    if mode == "kill":
        while True:  # the kernel frees the port once the process is gone
            try:
                os.kill(pid, 0)
                time.sleep(0.01)
            except ProcessLookupError:
                break
        start_redis()
    else:
        os.kill(pid, signal.SIGCONT)
    while not redis_answers():
        time.sleep(0.01)
    back = time.monotonic() - started
    capped_after = breaker_closed_after = None
    while time.monotonic() - started < total_s + 10 and (capped_after is None or breaker_closed_after is None):
        now = time.monotonic() - started
        if breaker_closed_after is None and metric("tandem_capping_breaker_state") == 0:
            breaker_closed_after = now - back
        if capped_after is None:
            post_events([{"kind": "dismiss", "item_id": item, "user": probe_user}])
            listed = [i["item_id"] for i in get_json(list_path)["items"]]
            if item not in listed:
                capped_after = time.monotonic() - started - back
        time.sleep(0.02)
    oha.wait()

rows = []
with open(csv_path) as f:
    for row in csv.DictReader(f):
        rows.append((float(row["request-start"]), float(row["request-duration"]) * 1000,
                     row["status"]))


def window(lo, hi):
    lat = sorted(ms for start, ms, _ in rows if lo <= start < hi)
    if not lat:
        return {"requests": 0}
    pick = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))], 2)
    ok = sum(1 for start, _, status in rows if lo <= start < hi and status == "200")
    return {"requests": len(lat), "ok": ok, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": round(lat[-1], 2), "over_5_ms": sum(1 for ms in lat if ms > 5)}


print(json.dumps({
    "rate": rate, "mode": mode, "redis_gone_at_s": round(gone, 3), "redis_away_s": round(back - gone, 2),
    "before": window(1.0, gone),
    "first_second_of_outage": window(gone, gone + 1.0),
    "whole_outage": window(gone, back),
    "after_return": window(back, total_s),
    "capping_back_after_s": None if capped_after is None else round(capped_after, 2),
    "breaker_closed_after_s": None if breaker_closed_after is None else round(breaker_closed_after, 2),
    "store_errors": metric("tandem_capping_store_errors_total"),
    "calls_skipped_by_breaker": metric("tandem_capping_breaker_skipped_total"),
}), flush=True)
