"""Opens connections to a running Tandem server one at a time, each sending half a request
head, and prints the server's resident memory growth per open connection once STEP
connections are open, for each STEP. Run the server with a head deadline longer than this
takes (it closes none meanwhile) and `server.max_connections` above the last STEP. Used by
scripts/hostile-bench --slow-connections N.

Usage: connection-memory.py PORT SERVER_PID STEP...   (raise `ulimit -n` above the last STEP)
"""
import json, socket, subprocess, sys, time

port, pid, steps = int(sys.argv[1]), int(sys.argv[2]), [int(a) for a in sys.argv[3:]]


def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])


def metric(name):
    out = subprocess.run(["curl", "-fsS", "--max-time", "5", f"http://127.0.0.1:{port}/metrics"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])


before = rss_kib()
held = []
for step in steps:
    while len(held) < step:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(s)
    time.sleep(1)
    open_now = metric("tandem_http_connections_open")
    grown = rss_kib() - before
    print(json.dumps({"half_heads": step, "server_connections_open": open_now,
                      "rss_growth_mib": round(grown / 1024, 1),
                      "rss_bytes_per_connection": round(grown * 1024 / step)}), flush=True)
