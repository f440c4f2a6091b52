#!/usr/bin/python3
"""Memory per SMTP session in ingress.

Starts a private relay (the end-to-end harness, build/bin binaries), then
holds N idle plaintext sessions (greeting read, nothing sent) and M TLS
sessions (STARTTLS done, EHLO answered, then a NOOP every second so they
stay active) and reads the ingress process's resident memory (VmRSS) before
and after each step. Prints a table and writes bench/results/sessions.json.

usage: bench/sessions.py [--idle 5000] [--tls 500] [--seconds 10]
"""
import argparse
import json
import os
import resource
import selectors
import socket
import ssl
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
from harness import Relay  # noqa: E402
from procstat import rss_kib  # noqa: E402,F401 (bench/soak.py takes it from here too)


def open_idle(port, n):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    # read every greeting, so each session is past its start
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    pending = len(socks)
    deadline = time.time() + 60
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            data = key.fileobj.recv(512)
            if not data.startswith(b"220"):
                raise RuntimeError("bad greeting %r" % data)
            sel.unregister(key.fileobj)
            pending -= 1
    if pending:
        raise RuntimeError("%d sessions got no greeting" % pending)
    return socks


def open_tls(port, n, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO bench\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"STARTTLS\r\n")
        f.readline()
        t = ctx.wrap_socket(s)
        t.sendall(b"EHLO bench\r\n")
        tf = t.makefile("rb")
        while not tf.readline().startswith(b"250 "):
            pass
        out.append((t, tf))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--tls", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    relay = Relay("bench-sessions", config_edit=lambda t: t.replace(
        "ingress = {\n",
        "ingress = {\n  max_connections_per_ip = 100000;\n  max_connections = 100000;\n", 1))
    try:
        relay.start()
        pid = relay.procs["ingress-1"].pid
        warm = open_idle(relay.submission, 10)
        for s in warm:
            s.close()
        time.sleep(0.5)
        base = rss_kib(pid)
        idle = open_idle(relay.submission, args.idle)
        time.sleep(1)
        after_idle = rss_kib(pid)
        tls = open_tls(relay.submission, args.tls, relay.cert)
        end = time.time() + args.seconds
        peak = after_idle
        while time.time() < end:
            for t, tf in tls:
                t.sendall(b"NOOP\r\n")
            for t, tf in tls:
                tf.readline()
            peak = max(peak, rss_kib(pid))
            time.sleep(1)
        after_tls = rss_kib(pid)
        result = {
            "idle_sessions": args.idle,
            "tls_sessions": args.tls,
            "rss_base_kib": base,
            "rss_idle_kib": after_idle,
            "rss_idle_plus_tls_kib": after_tls,
            "rss_peak_kib": peak,
            "kib_per_idle_session": round((after_idle - base) / args.idle, 2),
            "kib_per_tls_session": round((after_tls - after_idle) / max(args.tls, 1), 2),
        }
        for s in idle:
            s.close()
        for t, _ in tls:
            t.close()
    finally:
        relay.cleanup()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "sessions.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("ingress memory per session")
    print("  %-28s %10s" % ("measure", "value"))
    for k, v in result.items():
        print("  %-28s %10s" % (k, v))


if __name__ == "__main__":
    main()
