#!/usr/bin/python3
"""Acceptance with a deferred backlog in the queue.

Starts two private relays (the end-to-end harness, build/bin binaries)
whose sandboxes refuse every connection with 421 for an hour. The first messages
are tried and deferred for retry_base (an hour); after those failures router
marks the sandbox endpoint down and, with probe_base and probe_max of an
hour, hands every later job back untried with a wait until its next probe,
an hour away. So each message goes out to router once and then waits in the
queue for the rest of the run: no retries run during the measures.
Recipients are spread over many domains so that queue holds no domain for
failing (a held domain is looked at again every minute, which would be work
of its own during the measure).

1. on a fresh relay, after a short warm-up (a few hundred messages, not
   measured), measure acceptance on the empty queue: C parallel clients on
   the legacy port send M messages in all; the time from the end of data
   (the final ".") to the 250 of each, and messages per second of the round;
2. on a second relay, preload B deferred messages as fast as P parallel
   clients can send them (its duration is recorded), and wait until each
   has been to router once;
3. measure acceptance on the backlogged relay, then on the fresh one again,
   in turn for R rounds each, so that a change in the machine's load (the
   runs are short, machines are shared) falls on both measures alike;
4. record each queue's resident memory, its store's size, and how long it
   takes to answer a QueueStats (asked every few seconds for /metrics) next
   to a ping.

Prints a table and writes bench/results/backlog.json with both measures
(latencies of all rounds together, the median rate of the rounds) and their
ratio. Takes a few minutes; not part of scripts/test.

usage: bench/backlog.py [--backlog 100000] [--preload-clients 8] [--clients 10]
                        [--messages 3000] [--rounds 6] [--size 1024] [--warmup 300]
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import re
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
    """Wait until every accepted message has been to router once and nothing is in flight."""
    def done():
        q = stats(relay, "queue")
        rt = stats(relay, "router")
        ok = (int(q.get("accepted", 0)) >= accepted and
              int(rt.get("jobs_total", 0)) >= int(q.get("accepted", 0)) and
              int(q.get("inflight", 1)) == 0 and int(rt.get("pending", 1)) == 0)
        return ok and q
    q = wait_for(done, timeout=timeout, interval=1.0, what="every message tried once")
    time.sleep(2)  # events still arriving at the collector
    return q


def rss_kib(pid, field="VmRSS"):
    """Resident memory in KiB: VmRSS all of it, RssAnon the process's own heap,
    RssFile the pages of mapped files (LMDB reads its map through mmap)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
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
    rt = stats(relay, "router")
    by_state = relay.ctl("queue", "stats")["total"]["by_state"]
    size, used = store_files(os.path.join(relay.var, "state", "queue-1"))
    return {
        "messages": int(q["messages"]),
        "scheduled": int(q["scheduled"]),
        "accepted": int(q["accepted"]),
        "queued_untried": by_state.get("queued", 0),
        "deferred_tried": by_state.get("deferred", 0),
        "router_jobs": int(rt.get("jobs_total", 0)),
        "router_held_back": int(rt.get("held_back", 0)),
        "rss_kib": rss_kib(relay.procs["queue-1"].pid),
        "rss_anon_kib": rss_kib(relay.procs["queue-1"].pid, "RssAnon"),
        "rss_file_kib": rss_kib(relay.procs["queue-1"].pid, "RssFile"),
        "store_used_bytes": int(q["store_bytes"]),
        "store_map_bytes": int(q["store_map"]),
        "store_file_bytes": size,
        "store_disk_bytes": used,
    }


def config(text):
    # retry_base "1h" (from the harness) and the template's retry_max_interval "1h"
    text = text.replace("queue = {\n", "queue = {\n  domain_hold_after = 10000;\n", 1)
    text = text.replace("router = {\n", 'router = {\n  probe_base = "1h";\n  probe_max = "1h";\n', 1)
    return text.replace("ingress = {\n", "ingress = {\n  max_connections_per_ip = 1000;\n", 1)


def bus_times(relay, tries=10):
    """Median round trip (ms) of a ServicePing and of a QueueStats to queue-1.

    QueueStats is what the events service asks every few seconds for its
    metrics; the difference is the time queue's loop spends answering it."""
    from buslib import Bus, msg
    m = re.search(r'^  queue = \[ "([^"]+)"', open(relay.config).read(), re.M)
    with Bus(m.group(1)) as b:
        ping, stats_ = [], []
        for _ in range(tries):
            t0 = time.monotonic()
            b.ping(timeout=10)
            ping.append(time.monotonic() - t0)
            t0 = time.monotonic()
            name, _, _ = b.request("queue_stats", msg("QueueStats"), timeout=30)
            stats_.append(time.monotonic() - t0)
            assert name == "queue_stats_reply", name
    return (round(statistics.median(ping) * 1000, 2),
            round(statistics.median(stats_) * 1000, 2))


def new_relay(name, args):
    relay = Relay(name, retry_base="1h", config_edit=config)
    relay.start()
    relay.add_demo_credential()  # the local profile's tenant, which legacy mail belongs to
    relay.ctl("sandbox", "fail", "--code", "421", "--seconds", "3600")
    if args.warmup:
        run_clients(relay.legacy, "warmup", args.clients, args.warmup, args.size)
    return relay


def pooled(rounds):
    """One summary over several rounds: all latencies together, the median rate."""
    lat = sorted(x for r in rounds for x in r[0])
    out = summary(lat, sum(r[1] for r in rounds), sum(r[2] for r in rounds))
    out["messages_per_s"] = round(statistics.median(len(r[0]) / r[1] for r in rounds), 1)
    out["rounds_messages_per_s"] = [round(len(r[0]) / r[1], 1) for r in rounds]
    del out["seconds"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100000)
    ap.add_argument("--preload-clients", type=int, default=8)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--messages", type=int, default=3000, help="messages per measure round")
    ap.add_argument("--rounds", type=int, default=6, help="measure rounds of each kind")
    ap.add_argument("--size", type=int, default=1024, help="bytes per message")
    ap.add_argument("--warmup", type=int, default=300,
                    help="messages sent to each relay before it is measured, not measured")
    args = ap.parse_args()

    def measure(relay, tag):
        return run_clients(relay.legacy, tag, args.clients, args.messages, args.size)

    fresh = loaded = None
    empty_rounds, backlog_rounds = [], []
    try:
        # the first measure: a fresh relay with an empty queue
        fresh = new_relay("bench-fresh", args)
        empty_rounds.append(measure(fresh, "empty0"))
        settle(fresh, args.warmup + args.messages, timeout=300)
        at_empty = queue_snapshot(fresh)
        at_empty["ping_ms"], at_empty["queue_stats_ms"] = bus_times(fresh)

        # a second relay takes the backlog
        loaded = new_relay("bench-loaded", args)
        t0 = time.monotonic()
        lat, secs, refused = run_clients(loaded.legacy, "preload", args.preload_clients,
                                         args.backlog, args.size)
        preload_secs = time.monotonic() - t0
        if refused:
            raise RuntimeError("%d preload messages were refused" % refused)
        t1 = time.monotonic()
        settle(loaded, args.warmup + args.backlog, timeout=3600)
        settle_secs = time.monotonic() - t1
        with_backlog = queue_snapshot(loaded)
        with_backlog["ping_ms"], with_backlog["queue_stats_ms"] = bus_times(loaded)

        # then turn about, so a change in the machine's load hits both alike
        for i in range(args.rounds):
            backlog_rounds.append(measure(loaded, "backlog%d" % i))
            if i + 1 < args.rounds:
                empty_rounds.append(measure(fresh, "empty%d" % (i + 1)))
        settle(loaded, args.warmup + args.backlog + args.rounds * args.messages, timeout=300)
        after = queue_snapshot(loaded)
    finally:
        for r in (fresh, loaded):
            if r:
                r.cleanup()

    empty, backlog = pooled(empty_rounds), pooled(backlog_rounds)
    result = {
        "setup": {
            "clients": args.clients, "messages_per_round": args.messages,
            "rounds": args.rounds, "message_bytes": args.size, "backlog": args.backlog,
            "preload_clients": args.preload_clients, "warmup_messages": args.warmup,
            "recipient_domains": DOMAINS, "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "empty": empty,
        "backlog": backlog,
        "ratio_backlog_to_empty": {
            k: round(backlog[k] / empty[k], 3) for k in ("messages_per_s", "p50_ms", "p99_ms")
        },
        "preload": {
            "messages": args.backlog,
            "seconds": round(preload_secs, 1),
            "messages_per_s": round(args.backlog / preload_secs, 1),
            "p50_ms": summary(lat, secs, refused)["p50_ms"],
            "p99_ms": summary(lat, secs, refused)["p99_ms"],
            "all_back_from_router_after_s": round(settle_secs, 1),
        },
        "queue_empty": at_empty,
        "queue_with_backlog": with_backlog,
        "queue_after_measure": after,
        "queue_per_message": {
            "rss_bytes": round((with_backlog["rss_kib"] - at_empty["rss_kib"]) * 1024.0 /
                               (with_backlog["messages"] - at_empty["messages"]), 1),
            "rss_anon_bytes": round((with_backlog["rss_anon_kib"] - at_empty["rss_anon_kib"]) *
                                    1024.0 / (with_backlog["messages"] - at_empty["messages"]), 1),
            "store_bytes": round((with_backlog["store_used_bytes"] -
                                  at_empty["store_used_bytes"]) /
                                 (with_backlog["messages"] - at_empty["messages"]), 1),
        },
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "backlog.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    print("acceptance, %d clients, %d rounds of %d messages of %d bytes each "
          "(end of data -> 250)" % (args.clients, args.rounds, args.messages, args.size))
    print("  %-16s %12s %12s %8s" % ("measure", "empty", "backlog", "ratio"))
    for k in ("messages_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"):
        ratio = backlog[k] / empty[k] if empty[k] else 0
        print("  %-16s %12s %12s %8.2f" % (k, empty[k], backlog[k], ratio))
    print("  rounds (msg/s)   empty %s, backlog %s" % (empty["rounds_messages_per_s"],
                                                        backlog["rounds_messages_per_s"]))
    print("preload: %d messages in %.1f s (%.0f/s), all back from router %.1f s later"
          % (args.backlog, preload_secs, args.backlog / preload_secs, settle_secs))
    print("queue with the backlog:")
    for k, v in with_backlog.items():
        print("  %-18s %14s  (empty: %s)" % (k, v, at_empty[k]))
    print("  per message: %(rss_bytes)s bytes resident (%(rss_anon_bytes)s of them the "
          "process's own), %(store_bytes)s bytes of store"
          % result["queue_per_message"])


if __name__ == "__main__":
    main()
