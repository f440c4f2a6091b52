#!/usr/bin/python3
"""Acceptance with a deferred backlog in the queue.

Starts a private relay (the end-to-end harness, build/bin binaries) whose
sandbox refuses every connection with 421 for an hour, with retry_base and
retry_max_interval of an hour, so every message is tried once, deferred, and
then left alone for the rest of the run. Recipients are spread over many
domains so that no destination is held for failing (a held domain is looked
at again every minute, which would be work of its own during the measure).

1. after a short warm-up (a few hundred messages, not measured), measure
   acceptance on the empty queue: C parallel clients on the legacy
   port send M messages in all; the time from the end of data (the final
   ".") to the 250 of each, and messages per second over the whole run;
2. preload B deferred messages as fast as P parallel clients can send them
   (its duration is recorded), and wait until each has had its first attempt;
3. measure acceptance again, the same way, with the backlog in place;
4. record the queue's resident memory and its store's size with the backlog.

Prints a table and writes bench/results/backlog.json with both measures and
their ratio. Takes a few minutes; not part of scripts/test.

usage: bench/backlog.py [--backlog 100000] [--preload-clients 8] [--clients 10]
                        [--messages 3000] [--size 1024] [--warmup 300]
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
from harness import Relay, wait_for  # noqa: E402

DOMAINS = 500  # recipient domains the messages are spread over


class Session:
    """One plain SMTP session on the legacy port, kept for many messages."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")
        self.expect(220)
        self.sock.sendall(b"EHLO bench.test\r\n")
        self.expect(250)

    def reply(self):
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("connection closed")
            if line[3:4] != b"-":
                return int(line[:3]), line.decode(errors="replace").strip()

    def expect(self, code):
        got, text = self.reply()
        if got != code:
            raise RuntimeError("expected %d, got %s" % (code, text))
        return text

    def send(self, rcpt, body):
        """Send one message; returns (seconds from the final '.' to the reply, reply)."""
        # the relay offers PIPELINING: envelope and DATA in one write
        self.sock.sendall(b"MAIL FROM:<bench@example.test>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                          % rcpt.encode())
        self.expect(250)
        self.expect(250)
        self.expect(354)
        self.sock.sendall(body)
        t0 = time.monotonic()
        self.sock.sendall(b".\r\n")
        code, text = self.reply()
        return time.monotonic() - t0, code, text

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, EOFError):
            pass
        self.sock.close()


def make_body(tag, n, size):
    head = ("From: bench@example.test\r\nTo: u%d@b%d.example\r\nSubject: %s %d\r\n"
            "Message-ID: <%s.%d@bench.test>\r\n\r\n" % (n, n % DOMAINS, tag, n, tag, n))
    line = "%-76s\r\n" % ("%s message %d" % (tag, n))
    lines = max(1, (size - len(head)) // len(line))
    return (head + line * lines).encode()


def client(port, tag, first, count, size, go, out):
    """One client process: connect, wait for the start, send count messages."""
    try:
        s = Session(port)
        go.wait()
        start = time.monotonic()
        lat = []
        refused = 0
        for n in range(first, first + count):
            secs, code, text = s.send("u%d@b%d.example" % (n, n % DOMAINS),
                                      make_body(tag, n, size))
            if code == 250:
                lat.append(secs)
            else:
                refused += 1
        end = time.monotonic()
        s.close()
        out.put({"start": start, "end": end, "lat": lat, "refused": refused})
    except Exception as e:  # reported by the parent
        out.put({"error": "%s: %s" % (type(e).__name__, e)})


def run_clients(port, tag, clients, total, size):
    """total messages over clients parallel sessions; per-message latencies and the rate."""
    go = mp.Event()
    out = mp.Queue()
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    procs, first = [], 0
    for i in range(clients):
        p = mp.Process(target=client, args=(port, tag, first, per[i], size, go, out))
        p.start()
        procs.append(p)
        first += per[i]
    time.sleep(1)  # every session connected and greeted
    go.set()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError("client failed: %s" % errors[0])
    lat = sorted(x for r in results for x in r["lat"])
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    refused = sum(r["refused"] for r in results)
    return lat, end - start, refused


def summary(lat, seconds, refused):
    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))] * 1000
    return {
        "messages": len(lat),
        "refused": refused,
        "seconds": round(seconds, 2),
        "messages_per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(pct(50), 2),
        "p90_ms": round(pct(90), 2),
        "p99_ms": round(pct(99), 2),
        "max_ms": round(lat[-1] * 1000, 2),
        "mean_ms": round(statistics.mean(lat) * 1000, 2),
    }


def stats(relay, service):
    st = relay.ctl("status")
    for s in st["services"]:
        if s["service"] == service and s["instance"] == "1":
            return s.get("stats", {})
    return {}


def settle(relay, accepted, timeout):
    """Wait until every accepted message had its first attempt and nothing is in flight."""
    def done():
        q = stats(relay, "queue")
        rt = stats(relay, "router")
        ok = (int(q.get("accepted", 0)) >= accepted and
              int(q.get("deferred", 0)) >= int(q.get("accepted", 0)) and
              int(q.get("inflight", 1)) == 0 and int(rt.get("pending", 1)) == 0)
        return ok and q
    q = wait_for(done, timeout=timeout, interval=1.0, what="every message tried once")
    time.sleep(2)  # events still arriving at the collector
    return q


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def store_files(path):
    size = blocks = 0
    for name in os.listdir(path):
        st = os.stat(os.path.join(path, name))
        size += st.st_size
        blocks += st.st_blocks * 512
    return size, blocks


def queue_snapshot(relay):
    q = stats(relay, "queue")
    size, used = store_files(os.path.join(relay.var, "state", "queue-1"))
    return {
        "messages": int(q["messages"]),
        "scheduled": int(q["scheduled"]),
        "accepted": int(q["accepted"]),
        "deferred_attempts": int(q["deferred"]),
        "rss_kib": rss_kib(relay.procs["queue-1"].pid),
        "store_used_bytes": int(q["store_bytes"]),
        "store_map_bytes": int(q["store_map"]),
        "store_file_bytes": size,
        "store_disk_bytes": used,
    }


def config(text):
    # retry_base "1h" (from the harness) and the template's retry_max_interval "1h"
    text = text.replace("queue = {\n", "queue = {\n  domain_hold_after = 10000;\n", 1)
    return text.replace("ingress = {\n", "ingress = {\n  max_connections_per_ip = 1000;\n", 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100000)
    ap.add_argument("--preload-clients", type=int, default=8)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--size", type=int, default=1024, help="bytes per message")
    ap.add_argument("--warmup", type=int, default=300,
                    help="messages sent before the first measure, not measured")
    args = ap.parse_args()

    relay = Relay("bench-backlog", retry_base="1h", config_edit=config)
    try:
        relay.start()
        relay.add_demo_credential()  # the local profile's tenant, which legacy mail belongs to
        relay.ctl("sandbox", "fail", "--code", "421", "--seconds", "3600")

        if args.warmup:
            run_clients(relay.legacy, "warmup", args.clients, args.warmup, args.size)
        empty = summary(*run_clients(relay.legacy, "empty", args.clients, args.messages,
                                     args.size))
        settle(relay, args.warmup + args.messages, timeout=300)
        at_empty = queue_snapshot(relay)

        t0 = time.monotonic()
        lat, secs, refused = run_clients(relay.legacy, "preload", args.preload_clients,
                                         args.backlog, args.size)
        preload_secs = time.monotonic() - t0
        if refused:
            raise RuntimeError("%d preload messages were refused" % refused)
        t1 = time.monotonic()
        settle(relay, args.warmup + args.messages + args.backlog, timeout=3600)
        settle_secs = time.monotonic() - t1
        with_backlog = queue_snapshot(relay)

        backlog = summary(*run_clients(relay.legacy, "backlog", args.clients, args.messages,
                                       args.size))
        after = queue_snapshot(relay)
    finally:
        relay.cleanup()

    result = {
        "setup": {
            "clients": args.clients, "messages": args.messages, "message_bytes": args.size,
            "backlog": args.backlog, "preload_clients": args.preload_clients,
            "warmup_messages": args.warmup,
            "recipient_domains": DOMAINS, "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "empty": empty,
        "backlog": backlog,
        "ratio_backlog_to_empty": {
            "messages_per_s": round(backlog["messages_per_s"] / empty["messages_per_s"], 3),
            "p50_ms": round(backlog["p50_ms"] / empty["p50_ms"], 3),
            "p99_ms": round(backlog["p99_ms"] / empty["p99_ms"], 3),
        },
        "preload": {
            "messages": args.backlog,
            "seconds": round(preload_secs, 1),
            "messages_per_s": round(args.backlog / preload_secs, 1),
            "p50_ms": summary(lat, secs, refused)["p50_ms"],
            "p99_ms": summary(lat, secs, refused)["p99_ms"],
            "first_attempts_done_after_s": round(settle_secs, 1),
        },
        "queue_empty": at_empty,
        "queue_with_backlog": with_backlog,
        "queue_per_message": {
            "rss_bytes": round((with_backlog["rss_kib"] - at_empty["rss_kib"]) * 1024.0 /
                               (with_backlog["messages"] - at_empty["messages"]), 1),
            "store_bytes": round((with_backlog["store_used_bytes"] -
                                  at_empty["store_used_bytes"]) /
                                 (with_backlog["messages"] - at_empty["messages"]), 1),
        },
        "queue_after_measure": after,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "backlog.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    print("acceptance, %d clients x %d messages of %d bytes (end of data -> 250)"
          % (args.clients, args.messages // args.clients, args.size))
    print("  %-16s %12s %12s %8s" % ("measure", "empty", "backlog", "ratio"))
    for k in ("messages_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"):
        ratio = backlog[k] / empty[k] if empty[k] else 0
        print("  %-16s %12s %12s %8.2f" % (k, empty[k], backlog[k], ratio))
    print("preload: %d messages in %.1f s (%.0f/s), first attempts done %.1f s later"
          % (args.backlog, preload_secs, args.backlog / preload_secs, settle_secs))
    print("queue with the backlog:")
    for k, v in with_backlog.items():
        print("  %-18s %14s  (empty: %s)" % (k, v, at_empty[k]))
    print("  per message: %(rss_bytes)s bytes of memory, %(store_bytes)s bytes of store"
          % result["queue_per_message"])


if __name__ == "__main__":
    main()
