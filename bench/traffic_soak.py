#!/usr/bin/python3
"""Every service's memory under steady traffic for ten minutes.

A private relay (tests/e2e/harness.py's) delivers to smtp-sink, except
recipients at faults.test, which a route sends to the relay's own sandbox.
For --seconds it carries a paced, mixed load that it can keep up with, so
that nothing piles up in the queue and what grows is what leaks:

  - 1 KiB messages on the legacy port, 4 sessions of 100 messages each,
    one after the other, at --rate messages a second;
  - 100 KiB messages, 2 sessions, at a twentieth of --rate;
  - STARTTLS + AUTH sessions of one message each (DKIM-signed), at a
    fortieth of --rate;
  - four messages a second to ok-N@faults.test and fail-550-N@faults.test:
    one recipient delivered to the sandbox, one bounced, so a DSN each;
  - every minute the sandbox answers 451 for 3 seconds: deferrals, retries.

Every --every seconds it samples each service's anonymous and file-backed
resident memory (RssAnon, RssFile of /proc/PID/status), open descriptors
and threads, and the queue's depth. Anonymous memory is the heap: a leak
shows there. File-backed memory is mostly LMDB's map, which grows with the
data kept (finished messages for done_retention, an hour; the event log).
At the end it stops the load, waits for the queue to drain and checks that
every message arrived: the sink's count against what was accepted plus one
DSN for each bounce, the sandbox's files against the delivered fault
recipients.

Writes bench/results/traffic-soak.json and prints a table per service.

usage: bench/traffic_soak.py [--seconds 600] [--every 10] [--rate 400]
"""
import argparse
import json
import os
import re
import smtplib
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from harness import Relay  # noqa: E402
import procstat  # noqa: E402
import targets  # noqa: E402

CLIENT = os.environ.get("SENDARIX_BENCH_CLIENT", os.path.join(ROOT, "build", "bench", "smtpclient"))
WARMUP_S = 120  # malloc arenas, caches and pools reach their size; growth counts from here


def status_kib(pid):
    """RssAnon, RssFile (KiB), open descriptors and threads of a process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile", "Threads"):
                out[key] = int(rest.split()[0])
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def route_faults_to_sandbox(relay, sink_port):
    """Everything to the sink but faults.test, which goes to the relay's sandbox."""
    with open(relay.config) as f:
        text = f.read()
    default = '{ name = "sandbox"; kind = "smarthost"; endpoints = [ "127.0.0.1:%d" ]' % relay.sandbox
    if default not in text:
        raise SystemExit("traffic_soak: the local profile's sandbox route has changed")
    text = text.replace(default, '{ name = "faults"; kind = "smarthost"; endpoints = '
                        '[ "127.0.0.1:%d" ]; tls = "none"; match = { recipient_domains = '
                        '[ "faults.test" ]; }; },\n    { name = "sink"; kind = "smarthost"; '
                        'endpoints = [ "127.0.0.1:%d" ]' % (relay.sandbox, sink_port), 1)
    with open(relay.config, "w") as f:
        f.write(text)


class Faults(threading.Thread):
    """Messages with one delivered and one bounced recipient, 4 a second."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.errors = []

    def run(self):
        n = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
                    for _ in range(4):
                        n += 1
                        msg = ("From: bench@example.test\r\nTo: ok-%d@faults.test\r\n"
                               "Subject: soak %d\r\n\r\nfault path %d\r\n" % (n, n, n))
                        s.sendmail("bench@example.test",
                                   ["ok-%d@faults.test" % n, "fail-550-%d@faults.test" % n], msg)
                        self.sent += 1
            except (OSError, smtplib.SMTPException) as e:
                self.errors.append(str(e))
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))


def start_loads(relay, seconds, rate):
    loads = [
        ("1 KiB", ["--port", str(relay.legacy), "--sessions", "4", "--per-session", "100",
                   "--size", "1024"], rate),
        ("100 KiB", ["--port", str(relay.legacy), "--sessions", "2", "--per-session", "100",
                     "--size", "102400"], rate / 20.0),
        ("TLS+AUTH", ["--port", str(relay.submission), "--sessions", "2", "--per-session", "1",
                      "--tls", "--auth", "demo:demo-password", "--from", "app@example.test",
                      "--size", "2048"], rate / 40.0),
    ]
    procs = []
    for name, args, r in loads:
        n = max(1, int(r * seconds))
        p = subprocess.Popen([CLIENT] + args + ["--messages", str(n), "--rate", "%.3f" % r],
                             stdout=subprocess.PIPE, text=True)
        procs.append((name, p))
    return procs


def event_counts(relay):
    """sendarix_events_total by type, from events' /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % relay.http, timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r'^sendarix_events_total\{type="([^"]+)"\} (\d+)$', text, re.M)}


def slope_kib_per_min(points):
    """Least-squares slope of (seconds, KiB) points, in KiB a minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    cov = sum((t - mx) * (v - my) for t, v in points)
    return 60.0 * cov / var if var else 0.0


def summarize(samples, services):
    late = [s for s in samples if s["t"] >= WARMUP_S]
    out = {}
    for svc in services:
        series = [(s["t"], s["services"][svc]) for s in late if svc in s["services"]]
        if not series:
            continue
        first, last = series[0][1], series[-1][1]
        out[svc] = {
            "anon_kib_after_warmup": first["RssAnon"], "anon_kib_last": last["RssAnon"],
            "anon_kib_max": max(v["RssAnon"] for _, v in series),
            "anon_growth_kib": last["RssAnon"] - first["RssAnon"],
            "anon_slope_kib_per_min": round(slope_kib_per_min(
                [(t, v["RssAnon"]) for t, v in series]), 1),
            "file_kib_after_warmup": first["RssFile"], "file_kib_last": last["RssFile"],
            "fds_after_warmup": first["fds"], "fds_last": last["fds"],
            "fds_max": max(v["fds"] for _, v in series),
            "threads_last": last["Threads"],
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--rate", type=float, default=400.0,
                    help="1 KiB messages a second; the other loads are fractions of it")
    args = ap.parse_args()
    if args.seconds <= WARMUP_S:
        ap.error("--seconds must be more than the %d s of warm-up" % WARMUP_S)

    sink = targets.Sink("soak")
    relay = Relay("bench-traffic")
    samples = []
    services = []
    try:
        route_faults_to_sandbox(relay, sink.port)
        relay.start()
        relay.add_demo_credential()
        services = sorted(relay.procs)
        faults = Faults(relay.legacy)
        t0 = time.monotonic()
        loads = start_loads(relay, args.seconds, args.rate)
        faults.start()
        next_fail = 60.0
        while True:
            t = time.monotonic() - t0
            depth = relay.ctl("queue", "stats", check=False) or {}
            samples.append({
                "t": round(t, 1), "queue_messages": depth.get("total", {}).get("messages"),
                "sink": sink.count(),
                "services": {svc: status_kib(relay.procs[svc].pid) for svc in services
                             if relay.procs[svc].poll() is None}})
            if all(p.poll() is not None for _, p in loads):
                break
            if t >= next_fail:
                relay.ctl("sandbox", "fail", "--code", "451", "--seconds", "3")
                next_fail += 60.0
            time.sleep(args.every)
        faults.stop.set()
        faults.join()
        load_seconds = time.monotonic() - t0
        sent = {}
        for name, p in loads:
            out, _ = p.communicate()
            r = json.loads(out)
            sent[name] = {"accepted": r["messages"], "refused": r["refused"],
                          "errors": r["errors"]}
        # drain: every deferral retried, every bounce's DSN sent
        drained = procstat.wait_until(
            lambda: (relay.ctl("queue", "stats", check=False) or {}).get(
                "total", {}).get("messages") == 0, 300, 1.0)
        accepted = sum(v["accepted"] for v in sent.values())
        want_sink = accepted + faults.sent  # one DSN per fault message
        procstat.wait_until(lambda: sink.count() >= want_sink, 60, 0.5)
        procstat.wait_until(lambda: len(os.listdir(relay.maildir)) >= faults.sent, 60, 0.5)
        events = event_counts(relay)
        exited = {svc: p.returncode for svc, p in relay.procs.items() if p.poll() is not None}
        result = {
            "seconds": round(load_seconds, 1), "rate_1k": args.rate, "every": args.every,
            "warmup_s": WARMUP_S, "loads": sent,
            "fault_messages": faults.sent, "fault_errors": faults.errors[:5],
            "queue_drained": bool(drained),
            "sink_received": sink.count(), "sink_expected": want_sink,
            "sandbox_files": len(os.listdir(relay.maildir)), "sandbox_expected": faults.sent,
            "events": events, "services_exited": exited,
            "services": summarize(samples, services),
            "samples": samples,
        }
    finally:
        relay.cleanup()
        sink.stop()

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "traffic-soak.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("%.0f s of traffic: %s; %d fault messages; queue drained: %s; sink %d of %d, "
          "sandbox %d of %d; services exited: %s" % (
              result["seconds"], ", ".join("%s %d accepted (%d refused, %d errors)" % (
                  k, v["accepted"], v["refused"], v["errors"]) for k, v in sent.items()),
              faults.sent, result["queue_drained"], result["sink_received"], want_sink,
              result["sandbox_files"], faults.sent, exited or "none"))
    print("events: " + ", ".join("%s %d" % kv for kv in sorted(result["events"].items())))
    print("%-12s %10s %10s %8s %10s %12s %12s %8s" % (
        "service", "anon@%ds" % WARMUP_S, "anon end", "growth", "KiB/min", "file@%ds" % WARMUP_S,
        "file end", "fds"))
    for svc, s in result["services"].items():
        print("%-12s %10d %10d %8d %10.1f %12d %12d %4d->%d" % (
            svc, s["anon_kib_after_warmup"], s["anon_kib_last"], s["anon_growth_kib"],
            s["anon_slope_kib_per_min"], s["file_kib_after_warmup"], s["file_kib_last"],
            s["fds_after_warmup"], s["fds_last"]))
    depths = [s["queue_messages"] for s in samples if s["queue_messages"] is not None]
    if depths:
        print("queue depth while loaded: median %d, max %d" % (statistics.median(depths),
                                                             max(depths)))


if __name__ == "__main__":
    main()
