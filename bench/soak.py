#!/usr/bin/python3
"""Ingress memory while it holds many sessions for a long time.

Like bench/sessions.py (whose session openers it uses): a private relay,
N idle plaintext sessions (greeting read, nothing sent) and M TLS sessions
(STARTTLS, EHLO), held for --seconds while ingress's resident memory is
sampled every --every seconds. The TLS sessions send a NOOP every 30 s. Two
settings are raised for the run, since by design ingress closes a session
silent for command_timeout (5 min) and one that sends max_junk_commands
(100) commands without a message: command_timeout = 15m, and the NOOPs stay
well under 100.

Writes bench/results/sessions-soak.json and prints the samples' summary.

usage: bench/soak.py [--idle 5000] [--tls 500] [--seconds 600] [--every 10]
"""
import argparse
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
from harness import Relay  # noqa: E402
from sessions import open_idle, open_tls, rss_kib  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--tls", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    relay = Relay("bench-soak", config_edit=lambda t: t.replace(
        "ingress = {\n",
        "ingress = {\n  max_connections_per_ip = 100000;\n  max_connections = 100000;\n"
        '  command_timeout = "15m";\n', 1))
    samples = []
    try:
        relay.start()
        pid = relay.procs["ingress-1"].pid
        base = rss_kib(pid)
        idle = open_idle(relay.submission, args.idle)
        tls = open_tls(relay.submission, args.tls, relay.cert)
        t0 = time.time()
        last_noop = t0
        while True:
            now = time.time()
            samples.append((round(now - t0, 1), rss_kib(pid)))
            if now - t0 >= args.seconds:
                break
            if now - last_noop >= 30:
                for t, tf in tls:
                    t.sendall(b"NOOP\r\n")
                for t, tf in tls:
                    tf.readline()
                last_noop = now
            time.sleep(args.every)
        alive = 0
        for s in idle:  # every idle session must still be open
            s.setblocking(False)
            try:
                alive += 1 if s.recv(1) != b"" else 0
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        for s in idle:
            s.close()
        for t, _ in tls:
            t.close()
    finally:
        relay.cleanup()
    rss = [r for _, r in samples]
    result = {
        "idle_sessions": args.idle, "tls_sessions": args.tls, "seconds": args.seconds,
        "idle_sessions_still_open": alive,
        "rss_base_kib": base, "rss_first_kib": rss[0], "rss_last_kib": rss[-1],
        "rss_min_kib": min(rss), "rss_max_kib": max(rss),
        "growth_kib": rss[-1] - rss[0],
        "kib_per_session": round((rss[0] - base) / float(args.idle + args.tls), 2),
        "samples": samples,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "sessions-soak.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("ingress RSS holding %d idle + %d TLS sessions for %d s: first %d KiB, last %d KiB, "
          "min %d, max %d (growth %d KiB); %d of the idle sessions still open" % (
              args.idle, args.tls, args.seconds, rss[0], rss[-1], min(rss), max(rss),
              rss[-1] - rss[0], alive))


if __name__ == "__main__":
    main()
