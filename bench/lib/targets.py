"""The things the benchmark sends mail through, each on its own loopback ports.

Sink:     Postfix's smtp-sink, counting every message it receives (-c).
Sendarix: a private relay started like the end-to-end tests do (build/bin
          binaries, its own var folder and ports), its route pointing at a sink.
Postfix:  a private Postfix (its own config, queue and data directories under
          a temporary folder, `postfix -c DIR`), a relay to a sink.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from harness import Relay, free_port_block  # noqa: E402

import procstat  # noqa: E402

TMP_BASE = os.environ.get("SENDARIX_BENCH_TMP", "/tmp/sendarix-bench")
SERVICES = ["events", "auth", "queue", "router", "delivery", "sandbox", "ingress"]


def free_port():
    return free_port_block(1)


class Sink:
    """smtp-sink on 127.0.0.1:port; count() is the messages it has received."""

    def __init__(self, name):
        os.makedirs(TMP_BASE, exist_ok=True)
        self.port = free_port()
        self.out = os.path.join(TMP_BASE, "sink-%s-%d.out" % (name, self.port))
        self.name = name
        f = open(self.out, "wb")
        # -u: smtp-sink drops root for this user; backlog 1024 connections
        self.proc = subprocess.Popen(["smtp-sink", "-c", "-u", "nobody", "-m", "1024",
                                      "127.0.0.1:%d" % self.port, "1024"],
                                     stdout=f, stderr=subprocess.STDOUT)
        f.close()
        procstat.wait_until(self._listening, 10, 0.05)

    def _listening(self):
        import socket
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", self.port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def count(self):
        """Messages received so far (the last 'mesg=N' of smtp-sink's counter)."""
        try:
            with open(self.out, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 200))
                tail = f.read()
        except OSError:
            return 0
        m = re.findall(rb"mesg=(\d+)", tail)
        return int(m[-1]) if m else 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.out)
        except OSError:
            pass


class Ceiling:
    """Straight to the sink: what the machine does with no relay in between."""

    name = "ceiling"

    def __init__(self):
        self.sink = Sink("ceiling")
        self.plain_port = self.sink.port
        self.tls_port = None

    def pids(self):
        return []

    def reapers(self):
        return ()

    def stop(self):
        self.sink.stop()


class Sendarix:
    name = "sendarix"

    def __init__(self, log_level=None):
        self.sink = Sink("sendarix")
        sink_port = self.sink.port

        def edit(text):
            text = re.sub(r'(kind = "smarthost"; endpoints = \[ "127\.0\.0\.1:)\d+',
                          r"\g<1>%d" % sink_port, text, count=1)
            text = text.replace("ingress = {\n", "ingress = {\n  max_connections_per_ip = 10000;\n"
                                "  max_connections = 100000;\n", 1)
            if log_level:
                text = text.replace('log_level = "info";', 'log_level = "%s";' % log_level, 1)
            return text

        self.relay = Relay("bench", retry_base="60s", config_edit=edit)
        self.relay.start()
        self.relay.add_demo_credential()
        self.plain_port = self.relay.legacy
        self.tls_port = self.relay.submission
        self.cert = self.relay.cert
        self.key = os.path.join(self.relay.var, "tls", "key.pem")

    def pids(self):
        return [p.pid for p in self.relay.procs.values() if p.poll() is None]

    def service_pid(self, service):
        return self.relay.procs["%s-1" % service].pid

    def reapers(self):
        return ()

    def stop(self):
        self.relay.cleanup()
        self.sink.stop()


class Postfix:
    """A private Postfix: relay on plain_port, submission (STARTTLS + SASL) on tls_port."""

    name = "postfix"

    def __init__(self, cert, key, user="demo", password="demo-password"):
        self.sink = Sink("postfix")
        os.makedirs(TMP_BASE, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="postfix-", dir=TMP_BASE)
        # Postfix's own user must reach its queue and data directories
        os.chmod(TMP_BASE, 0o755)
        os.chmod(self.dir, 0o755)
        etc = os.path.join(self.dir, "etc")
        for d in ("etc", "etc/sasl", "queue", "data", "tls"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        shutil.copy(cert, os.path.join(self.dir, "tls", "cert.pem"))
        shutil.copy(key, os.path.join(self.dir, "tls", "key.pem"))
        self.plain_port = free_port_block(2)
        self.tls_port = self.plain_port + 1
        subst = {"@DIR@": self.dir, "@SINKPORT@": str(self.sink.port),
                 "@CERT@": os.path.join(self.dir, "tls", "cert.pem"),
                 "@KEY@": os.path.join(self.dir, "tls", "key.pem"),
                 "@SMTPPORT@": str(self.plain_port), "@SUBPORT@": str(self.tls_port)}
        for src, dst in (("main.cf.in", "etc/main.cf"), ("master.cf.in", "etc/master.cf"),
                         ("smtpd.conf.in", "etc/sasl/smtpd.conf")):
            with open(os.path.join(BENCH, "postfix", src)) as f:
                text = f.read()
            for k, v in subst.items():
                text = text.replace(k, v)
            with open(os.path.join(self.dir, dst), "w") as f:
                f.write(text)
        sasldb = os.path.join(etc, "sasl", "sasldb2")
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", sasldb, "-u", "bench.test", user],
                       input=password.encode(), check=True)
        shutil.chown(sasldb, user="postfix")
        shutil.chown(os.path.join(self.dir, "data"), user="postfix")
        self.etc = etc
        r = subprocess.run(["postfix", "-c", etc, "start"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("postfix did not start: %s%s\n%s" % (r.stdout, r.stderr,
                                                                    self.log_tail()))
        pidfile = os.path.join(self.dir, "queue", "pid", "master.pid")
        procstat.wait_until(lambda: os.path.exists(pidfile), 10, 0.05)
        with open(pidfile) as f:
            self.master = int(f.read().strip())
        self.user = user
        self.password = password

    def log_tail(self, n=20):
        try:
            with open(os.path.join(self.dir, "maillog"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def pids(self):
        return [self.master] + procstat.children(self.master)

    def reapers(self):
        return (self.master,)

    def queue_counts(self):
        """Files in each of Postfix's queues (one file per message)."""
        out = {}
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            n = 0
            for _, _, files in os.walk(os.path.join(self.dir, "queue", sub)):
                n += len(files)
            out[sub] = n
        return out

    def set_relayhost(self, port):
        subprocess.run(["postconf", "-c", self.etc, "-e", "relayhost = [127.0.0.1]:%d" % port],
                       check=True)
        subprocess.run(["postfix", "-c", self.etc, "reload"], capture_output=True, check=True)

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True)
        procstat.wait_until(lambda: not os.path.exists("/proc/%d" % self.master), 15, 0.1)
        if os.path.exists("/proc/%d" % self.master):
            os.kill(self.master, signal.SIGKILL)
        self.sink.stop()
        if os.environ.get("SENDARIX_KEEP_VAR") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
