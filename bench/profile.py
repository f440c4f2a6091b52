#!/usr/bin/python3
"""Where the relay spends its time under load, one service at a time.

Starts a private relay whose route points at an smtp-sink (bench/lib/
targets.py), warms it up, then for each service in turn: attaches
`perf record` (or runs the count under `strace -c` for the system calls)
to that service's process while bench/lib/smtpclient sends a fixed number
of messages (plain sessions on the legacy port by default, or STARTTLS+AUTH
sessions with --tls), waits until the sink has them all, and keeps the top
entries of the report. With --tool callgrind the service is restarted under
valgrind --tool=callgrind for the run instead (much slower; fewer messages).

Writes bench/results/profile.txt and profile.json (--name changes the name).

usage: bench/profile.py [--services ingress,queue,delivery,router,auth,events]
                        [--messages 20000] [--sessions 10] [--size 1024] [--tls]
                        [--tool perf|callgrind] [--top 20] [--no-strace]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "lib"))
import procstat  # noqa: E402
from targets import TMP_BASE, Sendarix  # noqa: E402

CLIENT = os.environ.get("SENDARIX_BENCH_CLIENT", os.path.join(ROOT, "build", "bench", "smtpclient"))
BIN = os.environ.get("SENDARIX_BIN", os.path.join(ROOT, "build", "bin"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load(sx, args, messages):
    port = sx.tls_port if args.tls else sx.plain_port
    cmd = [CLIENT, "--port", str(port), "--sessions", str(args.sessions), "--messages",
           str(messages), "--size", str(args.size), "--to", "rcpt@sink.example"]
    if args.tls:
        cmd += ["--tls", "--auth", "demo:demo-password", "--per-session", "1",
                "--from", "app@example.test"]
    else:
        cmd += ["--from", "bench@bench.test"]
    n0 = sx.sink.count()
    t0 = time.monotonic()
    r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    procstat.wait_until(lambda: sx.sink.count() >= n0 + r["messages"], 300, 0.01)
    r["end_to_end_s"] = round(time.monotonic() - t0, 3)
    return r


def clean(sym):
    sym = sym.replace("[.] ", "").replace("[k] ", "[kernel] ").rstrip()
    while sym.endswith(" -"):
        sym = sym[:-2].rstrip()
    return sym


def perf_top(data, top):
    """Self time by symbol (with its binary), the top entries."""
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                          "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in rep.splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) >= 4 and parts[0].endswith("%"):
            rows.append("%7s  %-24s %s" % (parts[0], parts[1][:24], clean(parts[3])))
        if len(rows) >= top:
            break
    # callers of the top symbols, inclusive (dwarf unwinding)
    inc = subprocess.run(["perf", "report", "-i", data, "--stdio", "--children",
                          "--sort", "symbol", "-g", "none", "--percent-limit", "3"],
                         capture_output=True, text=True).stdout
    incl = []
    generic = ("_start", "main", "__libc_start_call_main", "__libc_start_main_impl (inlined)",
               "__libc_start_main", "service_run", "loop_run", "entry_SYSCALL_64_after_hwframe",
               "do_syscall_64", "start_thread", "clone3", "__clone3")
    for line in inc.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 4 and parts[0].endswith("%") and parts[1].endswith("%"):
            name = clean(parts[3])
            if name.replace("[kernel] ", "") in generic:
                continue
            incl.append("%7s  %s" % (parts[0], name))
        if len(incl) >= top:
            break
    return rows, incl


def strace_counts(pid, run):
    out = os.path.join(TMP_BASE, "strace-%d.txt" % pid)
    p = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = run()
    p.send_signal(signal.SIGINT)
    p.wait()
    rows = []
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0].replace(".", "").isdigit():
                rows.append({"syscall": parts[-1], "percent_time": float(parts[0]),
                             "seconds": float(parts[1]), "calls": int(parts[3])})
    os.unlink(out)
    return r, rows[:12]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", default="ingress,queue,delivery,router,events,auth")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--tool", choices=("perf", "callgrind"), default="perf")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--name", default="profile",
                    help="results go to bench/results/NAME.txt and NAME.json")
    args = ap.parse_args()
    if args.tls and args.messages > 5000:
        args.messages = 3000
    os.makedirs(TMP_BASE, exist_ok=True)
    result = {"setup": {"messages": args.messages, "sessions": args.sessions, "size": args.size,
                        "tls": args.tls, "tool": args.tool,
                        "loadavg_start": procstat.loadavg()}, "services": {}}
    sx = Sendarix()
    try:
        load(sx, args, 500)  # warm-up
        for svc in args.services.split(","):
            entry = {}
            if args.tool == "perf":
                pid = sx.service_pid(svc)
                data = os.path.join(TMP_BASE, "perf-%s.data" % svc)
                cpu0 = procstat.cpu_seconds([pid])
                p = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph",
                                      "dwarf,16384", "-o", data, "-p", str(pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
                r = load(sx, args, args.messages)
                p.send_signal(signal.SIGINT)
                p.wait()
                cpu1 = procstat.cpu_seconds([pid])
                entry["cpu_ms_per_msg"] = round((cpu1 - cpu0) * 1000.0 / r["messages"], 3)
                entry["self"], entry["inclusive"] = perf_top(data, args.top)
                os.unlink(data)
            else:
                # restart this one service under callgrind
                sx.relay.kill(svc, sig=signal.SIGTERM)
                out = os.path.join(TMP_BASE, "callgrind.%s.out" % svc)
                logf = open(os.path.join(sx.relay.var, "log", svc + "-cg.log"), "ab")
                proc = subprocess.Popen(["valgrind", "--tool=callgrind",
                                         "--callgrind-out-file=" + out,
                                         os.path.join(BIN, "sendarix-" + svc), "--config",
                                         sx.relay.config, "--instance", "1"],
                                        stdout=logf, stderr=subprocess.STDOUT, cwd=sx.relay.var)
                sx.relay.procs[svc + "-1"] = proc
                time.sleep(5)
                r = load(sx, args, args.messages)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
                ann = subprocess.run(["callgrind_annotate", out], capture_output=True,
                                     text=True).stdout.splitlines()
                entry["self"] = [l for l in ann if "%" in l or "," in l][:args.top + 6]
                entry["inclusive"] = []
                sx.relay.spawn(svc)
                sx.relay.wait_up()
            entry["load"] = {k: r[k] for k in ("messages", "messages_per_s", "end_to_end_s",
                                               "lat_p50_ms", "lat_p99_ms")}
            if not args.no_strace and args.tool == "perf":
                r2, rows = strace_counts(sx.service_pid(svc),
                                         lambda: load(sx, args, max(1000, args.messages // 4)))
                for row in rows:
                    row["per_msg"] = round(row["calls"] / float(r2["messages"]), 2)
                entry["syscalls"] = rows
            result["services"][svc] = entry
            log("%s: %s" % (svc, entry["load"]))
    finally:
        sx.stop()
    result["setup"]["loadavg_end"] = procstat.loadavg()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", args.name + ".json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    lines = ["profile: %d messages of %d bytes over %d %s sessions per service, %s; load "
             "average %s -> %s" % (args.messages, args.size, args.sessions,
                                  "STARTTLS+AUTH" if args.tls else "plain", args.tool,
                                  result["setup"]["loadavg_start"][0],
                                  result["setup"]["loadavg_end"][0])]
    for svc, e in result["services"].items():
        lines.append("")
        lines.append("== %s  (CPU %s ms per message; load: %s)" % (
            svc, e.get("cpu_ms_per_msg", "-"), e["load"]))
        lines.append("-- self time, top entries")
        lines.extend(e["self"])
        if e.get("inclusive"):
            lines.append("-- inclusive (callers included), top entries")
            lines.extend(e["inclusive"])
        if e.get("syscalls"):
            lines.append("-- system calls (strace -c, a separate run): name, calls per message, "
                         "%% of syscall time")
            for row in e["syscalls"]:
                lines.append("   %-16s %8s  %5.1f%%" % (row["syscall"], row["per_msg"],
                                                        row["percent_time"]))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "results", args.name + ".txt"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
