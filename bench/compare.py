#!/usr/bin/python3
"""Sendarix against Postfix and against the machine's ceiling, on loopback.

The same load goes, in the same run, to three targets:
  sendarix  a private relay (build/bin, like the end-to-end tests), its route
            pointing at an smtp-sink; plain sessions on the legacy port (no
            AUTH), TLS sessions on submission (STARTTLS + AUTH PLAIN);
  postfix   a private Postfix relaying to another smtp-sink (bench/postfix/
            templates: relayhost, loopback only, its own queue; durability
            as shipped); TLS sessions on its submission service (STARTTLS +
            Cyrus SASL from an sasldb file);
  ceiling   smtp-sink itself, straight from the client.

Cases (every case of every target in each round, the targets' order turning
each round, so a change in the machine's load falls on all of them; the
figure reported is the median of the rounds):
  plain    1 KiB and 100 KiB messages over 1, 10 and 50 sessions, sent by
           Postfix's smtp-source (-d: messages follow each other on a
           session). Accepted msg/s is messages / smtp-source's run time;
           end-to-end msg/s is messages / time until the sink has counted
           them all (smtp-sink -c); CPU ms per message is the CPU time
           (utime+stime, /proc) of all the target's processes over the run
           and its delivery, reaped children included, divided by the
           messages; peak RSS and PSS are the sums over the target's
           processes, sampled every 0.25 s. Then the same sessions and size
           again, sent by bench/lib/smtpclient (C): the accept latency of
           every message, from the end of data (the final "." written) to
           the reply, p50 and p99.
  tls      one message per session, each session EHLO, STARTTLS, EHLO, AUTH
           PLAIN, MAIL, RCPT, DATA, QUIT (smtpclient --tls --auth
           --per-session 1), over 1 and 10 concurrent sessions: sessions/s.
           The ceiling is `openssl s_time -new` against `openssl s_server`
           with the relay's certificate: full handshakes per second over
           the wall time of the s_time process.
  idle     memory per idle session at 5,000 sessions (bench/sessions.py) for
           the relay; for Postfix (one smtpd process per session, 100 at
           most as shipped) the PSS and RSS added by 100 idle sessions.
  backlog  acceptance with a 100,000-message deferred backlog
           (bench/backlog.py), optional (--backlog 0 skips it).

Prints a table and writes bench/results/latest.json (and the chart's data,
bench/results/latest.dat). Leaves nothing running.

usage: bench/compare.py [--rounds 5] [--scale 1.0] [--only plain,tls,idle,backlog]
                        [--backlog 100000] [--idle 5000] [--idle-seconds 10]
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "lib"))
import procstat  # noqa: E402
from targets import Ceiling, Postfix, Sendarix, TMP_BASE, free_port  # noqa: E402

RESULTS = os.path.join(HERE, "results")
CLIENT = os.environ.get("SENDARIX_BENCH_CLIENT", os.path.join(ROOT, "build", "bench", "smtpclient"))
SENDER = "bench@bench.test"  # not a domain of the demo tenant: no DKIM signing on plain cases
RCPT = "rcpt@sink.example"

# messages per run, before --scale: (smtp-source run, latency run)
PLAIN_CASES = [
    (1024, 1, 2000, 1000), (1024, 10, 6000, 3000), (1024, 50, 6000, 3000),
    (102400, 1, 400, 200), (102400, 10, 1200, 600), (102400, 50, 1200, 600),
]
# (concurrent sessions, sessions per run): runs of a few seconds, so that a
# login that misses auth's cache (one scrypt hash, once per cache lifetime)
# weighs as little as it does in a steady stream
TLS_SESSIONS = [(1, 1000), (10, 2000)]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def size_name(size):
    return "%d KiB" % (size // 1024)


def run_timed(cmd, timeout):
    """Run cmd; returns (seconds, stdout, its children's CPU seconds)."""
    t0 = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    secs = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise RuntimeError("%s exited %d: %s %s" % (cmd[0], r.returncode, r.stdout[-500:],
                                                   r.stderr[-500:]))
    return secs, r.stdout, cpu


def smtpclient(port, sessions, messages, size, tls=False, auth=None, per_session=0,
               sender=SENDER, timeout=600):
    cmd = [CLIENT, "--port", str(port), "--sessions", str(sessions), "--messages",
           str(messages), "--size", str(size), "--from", sender, "--to", RCPT]
    if tls:
        cmd.append("--tls")
    if auth:
        cmd += ["--auth", auth]
    if per_session:
        cmd += ["--per-session", str(per_session)]
    _, out, cpu = run_timed(cmd, timeout)
    res = json.loads(out)
    res["client_cpu_s"] = round(cpu, 3)
    return res


def wait_sink(target, want, timeout):
    """Seconds until the target's sink has counted want; None on timeout."""
    t0 = time.monotonic()
    ok = procstat.wait_until(lambda: target.sink.count() >= want, timeout, 0.005)
    return time.monotonic() - t0 if ok else None


def plain_run(target, size, sessions, messages, latency_messages):
    """One smtp-source run (rates, CPU, memory), then one smtpclient run (latency)."""
    pids = target.pids
    sampler = procstat.MemSampler(pids)
    sink0 = target.sink.count()
    cpu0 = procstat.cpu_seconds(pids(), target.reapers())
    sampler.start()
    t0 = time.monotonic()
    secs, _, _ = run_timed(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l",
                            str(size), "-d", "-f", SENDER, "-t", RCPT,
                            "127.0.0.1:%d" % target.plain_port], timeout=900)
    rest = wait_sink(target, sink0 + messages, timeout=max(120, messages / 20.0))
    e2e = (secs + rest) if rest is not None else None
    # the sink counts a message at its ".": give the relay a moment to record the outcome
    time.sleep(0.3 if target.name != "ceiling" else 0)
    cpu1 = procstat.cpu_seconds(pids(), target.reapers())
    sampler.stop()
    out = {
        "messages": messages,
        "accepted_per_s": round(messages / secs, 1),
        "end_to_end_per_s": round(messages / e2e, 1) if e2e else None,
        "end_to_end_s": round(e2e, 3) if e2e else None,
        "cpu_ms_per_msg": round((cpu1 - cpu0) * 1000.0 / messages, 3) if pids() else None,
        "peak_rss_mib": round(sampler.peak_rss / 1024.0, 1) if pids() else None,
        "peak_pss_mib": round(sampler.peak_pss / 1024.0, 1) if pids() else None,
        "peak_processes": sampler.peak_procs,
    }
    if e2e is None:
        out["missing_at_sink"] = sink0 + messages - target.sink.count()
    # latency: the same shape of load from our own client
    sink1 = target.sink.count()
    lat = smtpclient(target.plain_port, sessions, latency_messages, size)
    wait_sink(target, sink1 + lat["messages"], timeout=max(120, latency_messages / 20.0))
    out.update({
        "latency_messages": lat["messages"],
        "latency_refused": lat["refused"] + lat["errors"],
        "client_accepted_per_s": lat["messages_per_s"],
        "p50_ms": lat["lat_p50_ms"],
        "p99_ms": lat["lat_p99_ms"],
        "max_ms": lat["lat_max_ms"],
    })
    return out


def tls_run(target, sessions, count):
    cpu0 = procstat.cpu_seconds(target.pids(), target.reapers())
    sink0 = target.sink.count()
    r = smtpclient(target.tls_port, sessions, count, 1024, tls=True,
                   auth="%s:%s" % ("demo", "demo-password"), per_session=1,
                   sender="app@example.test")
    wait_sink(target, sink0 + r["messages"], timeout=120)
    time.sleep(0.3)
    cpu1 = procstat.cpu_seconds(target.pids(), target.reapers())
    return {
        "sessions": r["sessions"],
        "errors": r["errors"] + r["refused"],
        "sessions_per_s": r["sessions_per_s"],
        "setup_p50_ms": r["setup_p50_ms"],
        "setup_p99_ms": r["setup_p99_ms"],
        "p50_ms": r["lat_p50_ms"],
        "p99_ms": r["lat_p99_ms"],
        "cpu_ms_per_session": round((cpu1 - cpu0) * 1000.0 / max(1, r["sessions"]), 3),
        "client_cpu_ms_per_session": round(r["client_cpu_s"] * 1000.0 / max(1, r["sessions"]),
                                           3),
    }


def s_time(cert, key, seconds):
    """openssl s_time -new against openssl s_server with the same certificate."""
    port = free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert",
                            cert, "-key", key, "-www", "-quiet", "-naccept", "1000000"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        procstat.wait_until(lambda: _connects(port), 10, 0.05)
        cpu0 = procstat.cpu_seconds([srv.pid])
        secs, out, client_cpu = run_timed(["openssl", "s_time", "-connect",
                                           "127.0.0.1:%d" % port, "-new", "-time",
                                           str(seconds)], timeout=seconds + 60)
        cpu1 = procstat.cpu_seconds([srv.pid])
    finally:
        srv.terminate()
        srv.wait()
    import re
    # its own "real seconds" are whole seconds of time(), up to one more than
    # it ran: the process's wall time is the measure
    n = int(re.search(r"(\d+) connections in \d+ real seconds", out).group(1))
    return {"handshakes": n, "seconds": round(secs, 3),
            "sessions_per_s": round(n / secs, 1),
            "server_cpu_ms_per_session": round((cpu1 - cpu0) * 1000.0 / max(1, n), 3),
            "client_cpu_ms_per_session": round(client_cpu * 1000.0 / max(1, n), 3)}


def make_cert():
    """A throwaway self-signed certificate (for the Postfix instances of the backlog case)."""
    import tempfile
    os.makedirs(TMP_BASE, exist_ok=True)
    fd, cert = tempfile.mkstemp(prefix="cert-", suffix=".pem", dir=TMP_BASE)
    os.close(fd)
    key = cert.replace("cert-", "key-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def _connects(port):
    import socket
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def median_of(rounds, key):
    vals = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def summarize(rounds):
    keys = [k for k in rounds[0] if isinstance(rounds[0][k], (int, float))]
    out = {k: median_of(rounds, k) for k in keys}
    out["rounds"] = rounds
    return out


def postfix_idle(pf, n=100):
    """PSS and RSS that n idle sessions add to Postfix (one smtpd process each)."""
    import socket
    time.sleep(1)
    base_pss = sum(procstat.pss_kib(p) for p in pf.pids())
    base_rss = sum(procstat.rss_kib(p) for p in pf.pids())
    base_n = len(pf.pids())
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", pf.plain_port))
        socks.append(s)
    for s in socks:
        s.settimeout(30)
        s.recv(512)  # the greeting
    time.sleep(1)
    pss = sum(procstat.pss_kib(p) for p in pf.pids())
    rss = sum(procstat.rss_kib(p) for p in pf.pids())
    procs = len(pf.pids())
    for s in socks:
        s.close()
    return {"sessions": n, "processes_added": procs - base_n,
            "kib_pss_per_idle_session": round((pss - base_pss) / float(n), 1),
            "kib_rss_per_idle_session": round((rss - base_rss) / float(n), 1)}


def postfix_backlog(cert, key, backlog, rounds, messages=3000, clients=10):
    """bench/backlog.py's measure for Postfix: acceptance by a fresh Postfix and by one
    holding `backlog` deferred messages, in turns. Both relay to a port where nothing
    listens, so every message is deferred (connection refused) and waits in the
    deferred queue; qmgr looks at it again only after queue_run_delay (300 s)."""
    fresh = loaded = None
    try:
        fresh = Postfix(cert, key)
        loaded = Postfix(cert, key)
        dead = free_port()
        for pf in (fresh, loaded):
            pf.set_relayhost(dead)
            smtpclient(pf.plain_port, clients, 300, 1024)  # warm-up
        t0 = time.monotonic()
        run_timed(["smtp-source", "-s", "8", "-m", str(backlog), "-l", "1024", "-d", "-f",
                   SENDER, "-t", RCPT, "127.0.0.1:%d" % loaded.plain_port], timeout=3600)
        preload = time.monotonic() - t0

        def settled():
            c = loaded.queue_counts()
            return c["incoming"] + c["active"] == 0 and c["deferred"] >= backlog
        procstat.wait_until(settled, 1800, 1.0)
        settle = time.monotonic() - t0 - preload
        held = loaded.queue_counts()
        empty_rounds, backlog_rounds = [], []
        for _ in range(rounds):
            backlog_rounds.append(smtpclient(loaded.plain_port, clients, messages, 1024))
            empty_rounds.append(smtpclient(fresh.plain_port, clients, messages, 1024))

        def med(rs):
            return {"messages_per_s": round(statistics.median(r["messages_per_s"] for r in rs), 1),
                    "p50_ms": round(statistics.median(r["lat_p50_ms"] for r in rs), 2),
                    "p99_ms": round(statistics.median(r["lat_p99_ms"] for r in rs), 2),
                    "rounds_messages_per_s": [r["messages_per_s"] for r in rs]}
        return {"backlog": backlog, "clients": clients, "messages_per_round": messages,
                "rounds": rounds, "queue_with_backlog": held,
                "preload": {"seconds": round(preload, 1),
                            "messages_per_s": round(backlog / preload, 1),
                            "all_deferred_after_s": round(settle, 1)},
                "empty": med(empty_rounds), "with_backlog": med(backlog_rounds)}
    finally:
        for pf in (fresh, loaded):
            if pf:
                pf.stop()


def run_script(args, timeout):
    log("running", " ".join(args))
    r = subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        log(r.stdout[-2000:], r.stderr[-2000:])
        return None
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every message count")
    ap.add_argument("--only", default="plain,tls,idle,backlog")
    ap.add_argument("--backlog", type=int, default=100000)
    ap.add_argument("--no-postfix-backlog", action="store_true",
                    help="measure the backlog on the relay only")
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--idle-seconds", type=int, default=10,
                    help="how long bench/sessions.py keeps its sessions (RSS flatness)")
    ap.add_argument("--s-time-seconds", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(RESULTS, "latest.json"))
    ap.add_argument("--table", metavar="JSON", help="print the table of an earlier run and exit "
                    "(its targets judged again by this version of the script)")
    args = ap.parse_args()
    if args.table:
        with open(args.table) as f:
            res = json.load(f)
        if res.get("plain"):
            res["targets"] = check_targets(res)
        print(render_table(res))
        return
    only = set(args.only.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    result = {
        "setup": {
            "cpus": os.cpu_count(), "kernel": platform.release(),
            "loadavg_start": procstat.loadavg(), "rounds": args.rounds, "scale": args.scale,
            "postfix": subprocess.run(["postconf", "-d", "-h", "mail_version"],
                                      capture_output=True, text=True).stdout.strip(),
            "openssl": subprocess.run(["openssl", "version"], capture_output=True,
                                      text=True).stdout.strip(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "plain": [], "tls": {}, "idle": {}, "backlog": None,
    }
    load_samples = []
    targets = []
    try:
        log("starting the relay, Postfix and the sinks")
        sx = Sendarix()
        targets.append(sx)
        pf = Postfix(sx.cert, sx.key)
        targets.append(pf)
        ceil = Ceiling()
        targets.append(ceil)
        # warm up: first logins (a scrypt hash each), first connections, caches
        for t in (sx, pf):
            smtpclient(t.plain_port, 4, 200, 1024)
            smtpclient(t.tls_port, 2, 10, 1024, tls=True, auth="demo:demo-password",
                       per_session=1, sender="app@example.test")
        smtpclient(ceil.plain_port, 4, 200, 1024)
        time.sleep(1)

        plain = {(s, n): {t.name: [] for t in targets} for s, n, _, _ in PLAIN_CASES}
        tls = {n: {t.name: [] for t in (sx, pf)} for n, _ in TLS_SESSIONS}
        s_times = []
        for rnd in range(args.rounds):
            order = targets[rnd % 3:] + targets[:rnd % 3]
            load_samples.append(procstat.loadavg())
            if "plain" in only:
                for size, sessions, msgs, lmsgs in PLAIN_CASES:
                    m = max(sessions, int(msgs * args.scale))
                    lm = max(sessions, int(lmsgs * args.scale))
                    for t in order:
                        log("round %d: %s, %s x %d sessions, %d messages" %
                            (rnd + 1, t.name, size_name(size), sessions, m))
                        r = plain_run(t, size, sessions, m, lm)
                        log("   accepted %.0f/s, end-to-end %s/s, p99 %.2f ms" %
                            (r["accepted_per_s"], r["end_to_end_per_s"], r["p99_ms"]))
                        plain[(size, sessions)][t.name].append(r)
            if "tls" in only:
                for sessions, count in TLS_SESSIONS:
                    for t in [x for x in order if x.name != "ceiling"]:
                        c = max(sessions, int(count * args.scale))
                        if t.name == "postfix" and sessions == 1:
                            c = max(1, c // 10)  # it is slow at one session: keep the run short
                        log("round %d: %s, TLS+AUTH, %d sessions, %d in all" %
                            (rnd + 1, t.name, sessions, c))
                        r = tls_run(t, sessions, c)
                        log("   %.1f sessions/s" % r["sessions_per_s"])
                        tls[sessions][t.name].append(r)
                s_times.append(s_time(sx.cert, sx.key, args.s_time_seconds))
                log("   openssl s_time: %.1f handshakes/s" % s_times[-1]["sessions_per_s"])

        for (size, sessions), by in plain.items():
            if not by["sendarix"]:
                continue
            result["plain"].append({
                "case": "%s x %d" % (size_name(size), sessions), "message_bytes": size,
                "sessions": sessions,
                "results": {name: summarize(rounds) for name, rounds in by.items()}})
        if s_times:
            result["tls"] = {
                "cases": [{"case": "TLS+AUTH x %d" % n, "sessions": n,
                           "results": {name: summarize(r) for name, r in by.items()}}
                          for n, by in tls.items()],
                "openssl_s_time": summarize(s_times),
            }
        if "idle" in only:
            result["idle"]["postfix"] = postfix_idle(pf)
    finally:
        for t in targets:
            try:
                t.stop()
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (t.name, e))

    if "idle" in only:
        out = run_script([os.path.join(HERE, "sessions.py"), "--idle", str(args.idle),
                          "--tls", "500", "--seconds", str(args.idle_seconds)], 1800)
        if out is not None:
            with open(os.path.join(RESULTS, "sessions.json")) as f:
                result["idle"]["sendarix"] = json.load(f)
    if "backlog" in only and args.backlog > 0:
        out = run_script([os.path.join(HERE, "backlog.py"), "--backlog", str(args.backlog)],
                         3600)
        if out is not None:
            with open(os.path.join(RESULTS, "backlog.json")) as f:
                b = json.load(f)
            result["backlog"] = {k: b[k] for k in ("setup", "empty", "backlog",
                                                   "ratio_backlog_to_empty", "preload")}
        if not args.no_postfix_backlog:
            log("Postfix with a backlog of %d deferred messages" % args.backlog)
            cert, key = make_cert()
            try:
                pb = postfix_backlog(cert, key, args.backlog, rounds=6)
            finally:
                os.unlink(cert)
                os.unlink(key)
            result["backlog"] = result["backlog"] or {}
            result["backlog"]["postfix"] = pb

    load_samples.append(procstat.loadavg())
    result["setup"]["loadavg_rounds"] = load_samples
    result["setup"]["loadavg_end"] = procstat.loadavg()
    result["setup"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["targets"] = check_targets(result)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.rename(args.out + ".tmp", args.out)
    write_chart_data(result, os.path.splitext(args.out)[0] + ".dat")
    print(render_table(result))


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def round_ratios(a, b, key, met):
    """The ratio a/b of key round by round (round i of each target ran side by
    side in time): "rounds LOW-HIGH, met in K of N", or None without rounds."""
    pairs = zip(a.get("rounds", []), b.get("rounds", []))
    rs = [ratio(x.get(key), y.get(key)) for x, y in pairs]
    rs = [r for r in rs if r is not None]
    if not rs:
        return None
    return "rounds %s-%s, met in %d of %d" % (min(rs), max(rs), sum(1 for r in rs if met(r)),
                                              len(rs))


def check_targets(res):
    """The performance targets, each with its measured value and whether it is met.
    A ratio target is judged on the medians; its note says how the rounds went."""
    out = []
    by = {c["case"]: c["results"] for c in res["plain"]}

    def add(what, value, goal, ok, note=None):
        out.append({"target": what, "value": value, "goal": goal,
                    "met": bool(ok) if value is not None else None})
        if note:
            out[-1]["note"] = note

    def add_ratio(what, a, b, key, goal, met):
        r = ratio(a[key], b[key])
        add(what, r, goal, r is not None and met(r), round_ratios(a, b, key, met))

    def at_least(x):
        return lambda r: r >= x

    for case in ("1 KiB x 10", "1 KiB x 50"):
        if case in by:
            s, p, c = by[case]["sendarix"], by[case]["postfix"], by[case]["ceiling"]
            add_ratio("%s accepted msg/s vs Postfix" % case, s, p, "accepted_per_s", ">= 4x",
                      at_least(4))
            add_ratio("%s end-to-end msg/s vs Postfix" % case, s, p, "end_to_end_per_s",
                      ">= 3x", at_least(3))
            add_ratio("%s ceiling / end-to-end msg/s" % case, c, s, "end_to_end_per_s",
                      "<= 2x", lambda r: r <= 2)
    for case in ("100 KiB x 1", "100 KiB x 10", "100 KiB x 50"):
        if case in by:
            s, p = by[case]["sendarix"], by[case]["postfix"]
            add_ratio("%s accepted msg/s vs Postfix" % case, s, p, "accepted_per_s", ">= 2x",
                      at_least(2))
            add_ratio("%s end-to-end msg/s vs Postfix" % case, s, p, "end_to_end_per_s",
                      ">= 2x", at_least(2))
    for case in ("1 KiB x 50", "100 KiB x 50"):
        if case in by:
            v = by[case]["sendarix"]["p99_ms"]
            # the same client straight to the sink: what the load shape costs with no relay
            c = by[case]["ceiling"].get("p99_ms")
            add("%s p99 accept latency (ms)" % case, v, "< 20", v is not None and v < 20,
                "ceiling's p99 %s ms" % c if c is not None else None)
    idle = res.get("idle", {}).get("sendarix")
    if idle:
        v = idle["kib_per_idle_session"]
        add("KiB per idle session (%d sessions)" % idle["idle_sessions"], v, "< 64", v < 64)
        growth = idle["rss_peak_kib"] - idle["rss_idle_plus_tls_kib"]
        add("ingress RSS growth while held (KiB)", growth, "flat", growth <= 1024)
    if res.get("tls"):
        st = res["tls"]["openssl_s_time"]
        for c in res["tls"]["cases"]:
            add_ratio("%s sessions/s vs openssl s_time" % c["case"], c["results"]["sendarix"], st,
                      "sessions_per_s", ">= 0.7", at_least(0.7))
    return out


def write_chart_data(res, path):
    """One row per case: case, then accepted and end-to-end msg/s of each target."""
    with open(path, "w") as f:
        f.write("# case sx_acc pf_acc ceil_acc sx_e2e pf_e2e ceil_e2e\n")
        for c in res["plain"]:
            r = c["results"]
            f.write('"%s" %s %s %s %s %s %s\n' % (
                c["case"], r["sendarix"]["accepted_per_s"], r["postfix"]["accepted_per_s"],
                r["ceiling"]["accepted_per_s"], r["sendarix"]["end_to_end_per_s"] or 0,
                r["postfix"]["end_to_end_per_s"] or 0, r["ceiling"]["end_to_end_per_s"] or 0))
        for c in res.get("tls", {}).get("cases", []):
            r = c["results"]
            st = res["tls"]["openssl_s_time"]["sessions_per_s"]
            f.write('"%s" %s %s %s %s %s %s\n' % (
                c["case"], r["sendarix"]["sessions_per_s"], r["postfix"]["sessions_per_s"], st,
                r["sendarix"]["sessions_per_s"], r["postfix"]["sessions_per_s"], st))


def fmt(v, nd=0):
    if v is None:
        return "-"
    return ("%%.%df" % nd) % v


def render_table(res):
    lines = []
    s = res["setup"]
    lines.append("Sendarix / Postfix %s / ceiling (smtp-sink), loopback, %d CPUs, medians of %d "
                 "rounds; load average at start %s, per round %s, at end %s" % (
                     s["postfix"], s["cpus"], s["rounds"], s["loadavg_start"][0],
                     [l[0] for l in s.get("loadavg_rounds", [])], s["loadavg_end"][0]))
    if res["plain"]:
        lines.append("")
        lines.append("plain sessions (smtp-source -d; latency from smtpclient: end of data -> 250)")
        hdr = ("| case | accepted msg/s S / P / ceiling | end-to-end msg/s S / P / ceiling | "
               "S/P acc | S/P e2e | p50 ms S / P | p99 ms S / P | CPU ms/msg S / P | "
               "peak RSS MiB S / P | peak PSS MiB S / P |")
        lines.append(hdr)
        lines.append("|" + "---|" * 10)
        for c in res["plain"]:
            r = c["results"]
            S, P, C = r["sendarix"], r["postfix"], r["ceiling"]
            lines.append("| %s | %s / %s / %s | %s / %s / %s | %s | %s | %s / %s | %s / %s | "
                         "%s / %s | %s / %s | %s / %s |" % (
                             c["case"], fmt(S["accepted_per_s"]), fmt(P["accepted_per_s"]),
                             fmt(C["accepted_per_s"]), fmt(S["end_to_end_per_s"]),
                             fmt(P["end_to_end_per_s"]), fmt(C["end_to_end_per_s"]),
                             fmt(ratio(S["accepted_per_s"], P["accepted_per_s"]), 2),
                             fmt(ratio(S["end_to_end_per_s"], P["end_to_end_per_s"]), 2),
                             fmt(S["p50_ms"], 2), fmt(P["p50_ms"], 2), fmt(S["p99_ms"], 2),
                             fmt(P["p99_ms"], 2), fmt(S["cpu_ms_per_msg"], 2),
                             fmt(P["cpu_ms_per_msg"], 2), fmt(S["peak_rss_mib"], 1),
                             fmt(P["peak_rss_mib"], 1), fmt(S["peak_pss_mib"], 1),
                             fmt(P["peak_pss_mib"], 1)))
    by = {c["case"]: c["results"] for c in res["plain"]}
    if "1 KiB x 10" in by:
        c = by["1 KiB x 10"]["ceiling"]
        lines.append("")
        lines.append("load clients against smtp-sink, 1 KiB x 10: smtp-source %s msg/s, "
                     "smtpclient %s msg/s (neither is the bottleneck of a relay measure)" % (
                         fmt(c["accepted_per_s"]), fmt(c["client_accepted_per_s"])))
    if res.get("tls"):
        t = res["tls"]
        st = t["openssl_s_time"]
        lines.append("")
        lines.append("TLS sessions (EHLO, STARTTLS, EHLO, AUTH PLAIN, one 1 KiB message, QUIT); "
                     "openssl s_time -new: %s handshakes/s (s_server %s CPU ms each)" % (
                         fmt(st["sessions_per_s"], 1), fmt(st["server_cpu_ms_per_session"], 2)))
        lines.append("| case | sessions/s S / P | S / s_time | setup p50 ms S / P | "
                     "CPU ms/session S / P | client CPU ms/session |")
        lines.append("|" + "---|" * 6)
        for c in t["cases"]:
            S, P = c["results"]["sendarix"], c["results"]["postfix"]
            lines.append("| %s | %s / %s | %s | %s / %s | %s / %s | %s |" % (
                c["case"], fmt(S["sessions_per_s"], 1), fmt(P["sessions_per_s"], 1),
                fmt(ratio(S["sessions_per_s"], st["sessions_per_s"]), 2),
                fmt(S["setup_p50_ms"], 1), fmt(P["setup_p50_ms"], 1),
                fmt(S["cpu_ms_per_session"], 2), fmt(P["cpu_ms_per_session"], 2),
                fmt(S["client_cpu_ms_per_session"], 2)))
    idle = res.get("idle") or {}
    if idle:
        lines.append("")
        if "sendarix" in idle:
            i = idle["sendarix"]
            lines.append("idle sessions: Sendarix ingress %s KiB each at %d sessions (RSS %s -> "
                         "%s KiB; TLS sessions %s KiB each; peak while held %s KiB)" % (
                             i["kib_per_idle_session"], i["idle_sessions"], i["rss_base_kib"],
                             i["rss_idle_kib"], i["kib_per_tls_session"], i["rss_peak_kib"]))
        if "postfix" in idle:
            i = idle["postfix"]
            lines.append("               Postfix %s KiB PSS (%s KiB RSS) each at %d sessions, "
                         "one smtpd process per session" % (
                             i["kib_pss_per_idle_session"], i["kib_rss_per_idle_session"],
                             i["sessions"]))
    b = res.get("backlog")
    if b and b.get("empty"):
        lines.append("")
        lines.append("backlog (bench/backlog.py, %d clients, 1 KiB): empty queue %s msg/s p99 %s ms;"
                     " with %d deferred %s msg/s p99 %s ms; preload %s msg/s" % (
                         b["setup"]["clients"], b["empty"]["messages_per_s"],
                         b["empty"]["p99_ms"], b["setup"]["backlog"],
                         b["backlog"]["messages_per_s"], b["backlog"]["p99_ms"],
                         b["preload"]["messages_per_s"]))
    if b and b.get("postfix"):
        p = b["postfix"]
        lines.append("        Postfix (%d clients, 1 KiB, medians of %d rounds): empty queue %s msg/s "
                     "p99 %s ms; with %d deferred %s msg/s p99 %s ms; preload %s msg/s" % (
                         p["clients"], p["rounds"], p["empty"]["messages_per_s"],
                         p["empty"]["p99_ms"], p["backlog"], p["with_backlog"]["messages_per_s"],
                         p["with_backlog"]["p99_ms"], p["preload"]["messages_per_s"]))
    if res.get("targets"):
        lines.append("")
        lines.append("| target | measured | goal | met | note |")
        lines.append("|---|---|---|---|---|")
        for t in res["targets"]:
            lines.append("| %s | %s | %s | %s | %s |" % (
                t["target"], t["value"], t["goal"],
                {True: "yes", False: "NO", None: "-"}[t["met"]], t.get("note", "")))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
