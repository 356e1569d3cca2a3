"""Opens N connections to a running Tandem server that each send half a request head and hold
on, then measures what a client on an existing keep-alive connection and a new client see, the
server's resident memory (when every half head has been sent, and later), and how long it takes to exit
on SIGTERM with them open (it sends the SIGTERM). Prints two JSON lines. Used by
scripts/hostile-bench --slow-connections N.

Usage: slow-connections.py PORT SERVER_PID N   (raise `ulimit -n` above N first)
"""
import socket, sys, time, json, os, signal, select, subprocess
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])/1024
def metric(name):
    out=subprocess.run(["curl","-fsS","--max-time","5",f"http://127.0.0.1:{port}/metrics"],capture_output=True,text=True).stdout
    for l in out.splitlines():
        if l.startswith(name+" "): return float(l.split()[1])
def get(sock):
    t=time.perf_counter(); sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); d=b""
    while b"\r\n\r\n" not in d: d+=sock.recv(4096)
    return (time.perf_counter()-t)*1000
def fds(): return len(os.listdir(f"/proc/{pid}/fd"))
keep=socket.create_connection(("127.0.0.1",port)); keep.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,1); get(keep)
before=rss(); fds_before=fds()
socks=[]
for i in range(n):
    s=socket.socket(); s.setblocking(False)
    try: s.connect(("127.0.0.1",port))
    except BlockingIOError: pass
    socks.append(s)
time.sleep(2)
sent=0
for s in socks:
    try: s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "); sent+=1
    except OSError: pass
time.sleep(0.5)
# Every half head sent, none at its deadline yet. Read from /proc: a request for /metrics
# would wait behind the connection cap until the first deadlines free a slot.
heads=rss(); open_heads=fds()-fds_before
lat=[]; end=time.time()+3
while time.time()<end: lat.append(get(keep)); time.sleep(0.005)
lat.sort()
open_now=metric("tandem_http_connections_open")
during=rss()
t=time.perf_counter()
try:
    c=socket.create_connection(("127.0.0.1",port),timeout=20); c.settimeout(20); get(c); new_ms=(time.perf_counter()-t)*1000
except Exception as e: new_ms=-1
print(json.dumps({"attempted":n,"established_and_sent":sent,"server_connections_open":open_now,
 "keepalive_p50_ms":round(lat[len(lat)//2],3),"keepalive_p99_ms":round(lat[int(len(lat)*.99)],3),
 "new_client_first_answer_ms":round(new_ms,1),"rss_before_mib":round(before,1),
 "server_sockets_with_heads":open_heads,"rss_with_heads_mib":round(heads,1),"rss_during_mib":round(during,1)}),flush=True)
t=time.time(); os.kill(pid, signal.SIGTERM)
while True:
    try:
        st=open(f"/proc/{pid}/stat").read().split()[2]
        if st=='Z': break
    except FileNotFoundError: break
    if time.time()-t>30: break
    time.sleep(0.01)
print(json.dumps({"sigterm_exit_seconds":round(time.time()-t,2)}),flush=True)
