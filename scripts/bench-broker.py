#!/usr/bin/env python3
"""Whisper fan-out through a broker: NATS vs Redis pub/sub, on loopback (docs/benchmarks.md).

Starts nats-server and redis-server on free ports, then for each: one subscriber connection and
one publisher connection (as two Hearken nodes have), N messages of a typical whisper size
(a snapshot, ~300 bytes), published back to back; measures publish-to-delivery latency
(p50/p99) at a paced rate, and the broker's CPU time per 1000 messages.
Usage: scripts/bench-broker.py [N] [messages per second]
"""
import os, re, socket, subprocess, sys, time, threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
# Messages per second: ~2 whisper messages per call per second, 1000 calls on the cluster.
RATE = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
PAYLOAD = b'x' * 300

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def wait_port(p):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", p)).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {p} never opened")

def run(name, sub_setup, pub_line, parse_stream):
    sub = socket.create_connection(("127.0.0.1", port)); sub_setup(sub)
    pub = socket.create_connection(("127.0.0.1", port)); pub_setup(pub)
    # The publisher's own replies (Redis answers every PUBLISH) are read and dropped.
    threading.Thread(target=lambda: [None for _ in iter(lambda: pub.recv(1 << 20), b"")], daemon=True).start()
    time.sleep(0.3)
    lat = []
    done = threading.Event()
    def reader():
        buf = b""
        while len(lat) < N:
            chunk = sub.recv(1 << 20)
            if not chunk: break
            buf += chunk
            buf, stamps = parse_stream(buf)
            now = time.perf_counter_ns()
            lat.extend(now - s for s in stamps)
        done.set()
    t = threading.Thread(target=reader); t.start()
    c0 = cpu(proc.pid)
    t0 = time.perf_counter()
    for k in range(N):
        msg = str(time.perf_counter_ns()).encode() + b":" + PAYLOAD
        pub.sendall(pub_line(msg))
        # Paced: the k-th message goes at k / RATE seconds.
        ahead = t0 + (k + 1) / RATE - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    done.wait(60)
    c1 = cpu(proc.pid)
    lat.sort()
    print(f"{name}: {len(lat)}/{N} delivered, latency p50 {lat[len(lat)//2]/1000:.0f} us, p99 {lat[int(len(lat)*0.99)]/1000:.0f} us, "
          f"broker CPU {1000*(c1-c0)/N*1000:.1f} ms per 1000 messages")

# NATS
port = free_port()
proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_port(port)
def nats_sub(s): s.recv(4096); s.sendall(b'CONNECT {"verbose":false}\r\nSUB w 1\r\n')
def pub_setup_nats(s): s.recv(4096); s.sendall(b'CONNECT {"verbose":false}\r\n')
pub_setup = pub_setup_nats
NATS_MSG = re.compile(rb"MSG w 1 (\d+)\r\n")
def nats_stamps(buf):
    out = []
    while True:
        m = NATS_MSG.search(buf)
        if not m: return buf, out
        end = m.end() + int(m.group(1))
        if len(buf) < end + 2: return buf, out
        out.append(int(buf[m.end():end].split(b":", 1)[0]))
        buf = buf[end + 2:]
run("nats", nats_sub, lambda m: b"PUB w %d\r\n%s\r\n" % (len(m), m), nats_stamps)
proc.kill(); proc.wait()

# Redis
port = free_port()
proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_port(port)
def redis_sub(s): s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nw\r\n")
pub_setup = lambda s: None
def redis_pub(m):
    return b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nw\r\n$%d\r\n%s\r\n" % (len(m), m)
REDIS_MSG = re.compile(rb"\$7\r\nmessage\r\n\$1\r\nw\r\n\$(\d+)\r\n")
def redis_stamps(buf):
    out = []
    while True:
        m = REDIS_MSG.search(buf)
        if not m: return buf, out
        end = m.end() + int(m.group(1))
        if len(buf) < end + 2: return buf, out
        out.append(int(buf[m.end():end].split(b":", 1)[0]))
        buf = buf[end + 2:]
run("redis", redis_sub, redis_pub, redis_stamps)
proc.kill(); proc.wait()
