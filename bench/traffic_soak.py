#!/usr/bin/python3
"""Every service's memory under steady traffic for ten minutes.

A private relay (tests/e2e/harness.py's) delivers to smtp-sink, except
recipients at faults.test, which a route sends to the relay's own sandbox.
The run is a row of one-minute phases. In each, a paced, mixed load that
the relay keeps up with, so that nothing piles up in the queue and what
grows is what leaks:

  - 1 KiB messages on the legacy port, 4 sessions of 100 messages each,
    one after the other, at --rate messages a second;
  - 100 KiB messages, 2 sessions, at a twentieth of --rate;
  - STARTTLS + AUTH sessions of one message each (DKIM-signed), at a
    fortieth of --rate;
  - four messages a second to ok-N@faults.test and fail-550-N@faults.test:
    one recipient delivered to the sandbox, one bounced, so a DSN each;
  - half way through, the sandbox answers 451 for 3 seconds: deferrals
    and retries.

After each phase the load stops and the relay drains: the queue empty,
the sink holding every accepted message and one DSN for each bounce, the
sandbox every delivered fault recipient, and the event counts still. At
that quiet moment every service reports its live heap (the stat
heap_in_use_bytes of `sendarixctl status`: the bytes its allocator holds
for live blocks). Between two quiet moments that figure changes only by
what a service keeps: a leak grows it phase after phase. The resident
memory is sampled every --every seconds all along: anonymous (RssAnon,
the heap plus what the allocator has not given back) and file-backed
(RssFile, mostly the LMDB maps, which grow with the data kept: finished
messages for done_retention, an hour; the event log).

With --asan the services are the AddressSanitizer build (build/asan, which
scripts/bench builds for it) and LeakSanitizer checks each one as it stops:
its reports, if any, are counted and kept with the result (the heap figures
are then the sanitizer allocator's, the RSS figures include its quarantine).

With --retention 2m queue keeps finished records and events its log that
long (an hour and 30 days as shipped), so that within the run the stores
stop growing and the sweeps that empty them run too.

Writes bench/results/traffic-soak.json (traffic-soak-asan.json with
--asan, traffic-soak-retention.json with --retention) and prints a table
per service.

usage: bench/traffic_soak.py [--seconds 600] [--every 10] [--rate 400] [--asan]
                             [--retention DURATION]
"""
import argparse
import json
import os
import re
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402
import procstat  # noqa: E402
import targets  # noqa: E402

CLIENT = os.environ.get("SENDARIX_BENCH_CLIENT", os.path.join(ROOT, "build", "bench", "smtpclient"))
PHASE_S = 60
WARMUP_PHASES = 2  # malloc arenas, caches and pools reach their size; growth counts from here


def status_kib(pid):
    """RssAnon, RssFile (KiB), open descriptors and threads of a process."""
    out = procstat.status(pid, ("RssAnon", "RssFile", "Threads"))
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def edit_config(relay, sink_port, retention):
    """Everything to the sink but faults.test, which goes to the relay's sandbox;
    with retention, queue's finished records and events' log kept that long."""
    with open(relay.config) as f:
        text = f.read()
    if retention:
        text = text.replace("queue = {\n", 'queue = {\n  done_retention = "%s";\n' % retention, 1)
        text = text.replace("events = {\n", 'events = {\n  retention = "%s";\n' % retention, 1)
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
    """Messages with one delivered and one bounced recipient, 4 a second.

    Numbered from first, so that no address comes back in a later phase: a
    bounced address is suppressed, and a second message to it would not
    bounce again."""

    def __init__(self, port, first):
        super().__init__(daemon=True)
        self.port = port
        self.n = first
        self.stop = threading.Event()
        self.sent = 0
        self.errors = []

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
                    for _ in range(4):
                        self.n += 1
                        n = self.n
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


def heaps(relay):
    """Each service's heap_in_use_bytes, from `sendarixctl status`."""
    doc = relay.ctl("status", check=False) or {}
    return {"%s-%s" % (s["service"], s["instance"]): int(s["stats"]["heap_in_use_bytes"])
            for s in doc.get("services", []) if s.get("up") and "heap_in_use_bytes" in
            s.get("stats", {})}


def queue_messages(relay):
    return (relay.ctl("queue", "stats", check=False) or {}).get("total", {}).get("messages")


def drain(relay, sink, want_sink, want_sandbox):
    """Until the relay is quiet: True, or a string naming what did not arrive."""
    if not procstat.wait_until(lambda: queue_messages(relay) == 0, 300, 0.5):
        return "the queue still holds %s messages" % queue_messages(relay)
    if not procstat.wait_until(lambda: sink.count() >= want_sink, 60, 0.2):
        return "the sink has %d of %d" % (sink.count(), want_sink)
    if not procstat.wait_until(lambda: len(os.listdir(relay.maildir)) >= want_sandbox, 60, 0.2):
        return "the sandbox has %d of %d" % (len(os.listdir(relay.maildir)), want_sandbox)
    last = [None]

    def still():
        now = event_counts(relay)
        same, last[0] = now == last[0], now
        return same
    procstat.wait_until(still, 30, 1.0)
    return True


def sanitizer_reports(folder):
    """The reports the sanitizers wrote (one file per process that found something)."""
    found = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), errors="replace") as f:
            text = f.read()
        summary = [line for line in text.splitlines() if line.startswith("SUMMARY:")]
        found.append({"file": name, "summary": summary[-1] if summary else text[:200],
                      "text": text[:20000]})
    shutil.rmtree(folder, ignore_errors=True)
    return found


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


def summarize(samples, quiet, services):
    warm = quiet[WARMUP_PHASES - 1]
    late = [s for s in samples if s["t"] >= warm["t"]]
    out = {}
    for svc in services:
        series = [(s["t"], s["services"][svc]) for s in late if svc in s["services"]]
        if not series or svc not in warm["heap"] or svc not in quiet[-1]["heap"]:
            continue
        first, last = series[0][1], series[-1][1]
        heap = [q["heap"].get(svc) for q in quiet]
        out[svc] = {
            "heap_bytes_at_quiet": heap,
            "heap_growth_bytes": quiet[-1]["heap"][svc] - warm["heap"][svc],
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
    ap.add_argument("--seconds", type=int, default=600,
                    help="time under load, in phases of %d s" % PHASE_S)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--rate", type=float, default=400.0,
                    help="1 KiB messages a second; the other loads are fractions of it")
    ap.add_argument("--asan", action="store_true",
                    help="run build/asan's services and collect LeakSanitizer's reports")
    ap.add_argument("--retention", metavar="DURATION",
                    help="keep finished records and events this long (e.g. 2m), so that the "
                    "stores stop growing within the run")
    args = ap.parse_args()
    phases = args.seconds // PHASE_S
    if phases <= WARMUP_PHASES:
        ap.error("--seconds must cover more than %d phases of %d s" % (WARMUP_PHASES, PHASE_S))
    reports = None
    if args.asan:
        harness.BIN = os.path.join(ROOT, "build", "asan", "bin")
        reports = tempfile.mkdtemp(prefix="soak-asan-")
        os.environ["ASAN_OPTIONS"] = "detect_leaks=1:log_path=%s/report" % reports
        os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=%s/report" % reports

    sink = targets.Sink("soak")
    relay = harness.Relay("bench-traffic")
    samples, quiet = [], []
    sent = {}
    faults_sent, fault_errors, problem = 0, [], None
    try:
        edit_config(relay, sink.port, args.retention)
        relay.start()
        relay.add_demo_credential()
        services = sorted(relay.procs)
        t0 = time.monotonic()
        under_load = 0.0
        for phase in range(phases):
            start = time.monotonic()
            loads = start_loads(relay, PHASE_S, args.rate)
            faults = Faults(relay.legacy, faults_sent)
            faults.start()
            failed_once = False
            while any(p.poll() is None for _, p in loads):
                t = time.monotonic() - t0
                samples.append({
                    "t": round(t, 1), "phase": phase + 1, "queue_messages": queue_messages(relay),
                    "services": {svc: status_kib(relay.procs[svc].pid) for svc in services
                                 if relay.procs[svc].poll() is None}})
                if not failed_once and time.monotonic() - start >= PHASE_S / 2:
                    relay.ctl("sandbox", "fail", "--code", "451", "--seconds", "3")
                    failed_once = True
                time.sleep(args.every)
            faults.stop.set()
            faults.join()
            under_load += time.monotonic() - start
            faults_sent += faults.sent
            fault_errors += faults.errors
            for name, p in loads:
                r = json.loads(p.communicate()[0])
                s = sent.setdefault(name, {"accepted": 0, "refused": 0, "errors": 0})
                for k, v in (("accepted", r["messages"]), ("refused", r["refused"]),
                             ("errors", r["errors"])):
                    s[k] += v
            accepted = sum(v["accepted"] for v in sent.values())
            done = drain(relay, sink, accepted + faults_sent, faults_sent)
            if done is not True:
                problem = "after phase %d: %s" % (phase + 1, done)
                break
            quiet.append({"phase": phase + 1, "t": round(time.monotonic() - t0, 1),
                          "heap": heaps(relay),
                          "anon_kib": {svc: status_kib(relay.procs[svc].pid)["RssAnon"]
                                       for svc in services if relay.procs[svc].poll() is None}})
            print("phase %d: %d accepted so far, quiet; heap KiB %s" % (
                phase + 1, accepted + faults_sent, " ".join(
                    "%s=%d" % (k.split("-")[0], v // 1024)
                    for k, v in sorted(quiet[-1]["heap"].items()))), flush=True)
        events = event_counts(relay)
        exited = {svc: p.returncode for svc, p in relay.procs.items() if p.poll() is not None}
        accepted = sum(v["accepted"] for v in sent.values())
        result = {
            "seconds_under_load": round(under_load, 1), "phases": len(quiet),
            "phase_s": PHASE_S, "rate_1k": args.rate, "every": args.every,
            "retention": args.retention,
            "warmup_phases": WARMUP_PHASES, "loads": sent,
            "fault_messages": faults_sent, "fault_errors": fault_errors[:5],
            "problem": problem,
            "sink_received": sink.count(), "sink_expected": accepted + faults_sent,
            "sandbox_files": len(os.listdir(relay.maildir)), "sandbox_expected": faults_sent,
            "events": events, "services_exited": exited,
            "services": summarize(samples, quiet, services) if len(quiet) > WARMUP_PHASES else {},
            "quiet": quiet, "samples": samples,
        }
    finally:
        relay.cleanup()  # SIGTERM: each service stops, and LeakSanitizer checks it
        sink.stop()
    if reports:
        result["sanitizer_reports"] = sanitizer_reports(reports)

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    name = "traffic-soak%s%s.json" % ("-asan" if args.asan else "",
                                      "-retention" if args.retention else "")
    with open(os.path.join(HERE, "results", name), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("%.0f s under load in %d phases: %s; %d fault messages; sink %d of %d, "
          "sandbox %d of %d; %s; services exited: %s" % (
              result["seconds_under_load"], result["phases"], ", ".join(
                  "%s %d accepted (%d refused, %d errors)" % (k, v["accepted"], v["refused"],
                                                             v["errors"])
                  for k, v in sent.items()),
              faults_sent, result["sink_received"], result["sink_expected"],
              result["sandbox_files"], faults_sent, problem or "every phase drained",
              exited or "none"))
    print("events: " + ", ".join("%s %d" % kv for kv in sorted(result["events"].items())))
    print("%-12s %12s %12s %10s %10s %10s %8s %12s %12s %8s" % (
        "service", "heap@warm", "heap end", "growth B", "anon@warm", "anon end", "KiB/min",
        "file@warm", "file end", "fds"))
    for svc, s in result["services"].items():
        print("%-12s %12d %12d %10d %10d %10d %8.1f %12d %12d %4d->%d" % (
            svc, s["heap_bytes_at_quiet"][WARMUP_PHASES - 1], s["heap_bytes_at_quiet"][-1],
            s["heap_growth_bytes"], s["anon_kib_after_warmup"], s["anon_kib_last"],
            s["anon_slope_kib_per_min"], s["file_kib_after_warmup"], s["file_kib_last"],
            s["fds_after_warmup"], s["fds_last"]))
    if reports:
        found = result["sanitizer_reports"]
        print("sanitizer reports: %d%s" % (len(found), "".join(
            "\n  " + r["summary"] for r in found)))
    depths = [s["queue_messages"] for s in samples if s["queue_messages"] is not None]
    if depths:
        print("queue depth while loaded: median %d, max %d" % (statistics.median(depths),
                                                             max(depths)))
    if problem or exited:
        sys.exit(1)


if __name__ == "__main__":
    main()
