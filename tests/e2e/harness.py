"""Start and drive a private Sendarix relay for one end-to-end test.

Each Relay gets its own var folder (under build/e2e/) and its own block of
five TCP ports, so tests never share state or ports. Services are the real
binaries from build/bin, started with the config that scripts/lib/genconf
writes from the local profile template; the test talks to them with real
clients (smtplib, swaks, curl, openssl) and with sendarixctl.
"""
import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# SENDARIX_BIN runs the tests against another build folder's binaries.
BIN = os.environ.get("SENDARIX_BIN", os.path.join(ROOT, "build", "bin"))
E2E_DIR = os.path.join(ROOT, "build", "e2e")
# Relays' var folders live under a short path: their ipc:// socket names must
# fit in a Unix socket address (107 bytes) wherever the repository is cloned.
VAR_BASE = os.environ.get("SENDARIX_E2E_VAR", "/tmp/sendarix-e2e")
ALL_SERVICES = ["events", "auth", "queue", "router", "delivery", "sandbox", "ingress"]


def free_port_block(count=5):
    """A base port such that base..base+count-1 are all free on 127.0.0.1."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + count > 65000:
            continue
        ok = True
        for p in range(base, base + count):
            t = socket.socket()
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                t.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free port block")


def submission_login(r, user, password):
    """An SMTP session on r's submission port after STARTTLS (the relay's own
    certificate trusted) and AUTH as user; use it with "with"."""
    ctx = ssl.create_default_context(cafile=r.cert)
    ctx.check_hostname = False
    s = smtplib.SMTP("127.0.0.1", r.submission, timeout=10)
    s.ehlo("client.example")
    s.starttls(context=ctx)
    s.ehlo("client.example")
    s.login(user, password)
    return s


def wait_for(predicate, timeout=15.0, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


class Relay:
    def __init__(self, name, retry_base="2s", config_edit=None):
        os.makedirs(VAR_BASE, exist_ok=True)
        self.var = tempfile.mkdtemp(prefix=name[:24] + "-", dir=VAR_BASE)
        self.base = free_port_block()
        self.submission = self.base
        self.smtps = self.base + 1
        self.legacy = self.base + 2
        self.sandbox = self.base + 3
        self.http = self.base + 4
        env = dict(os.environ, SENDARIX_RETRY_BASE=retry_base)
        subprocess.run([os.path.join(ROOT, "scripts", "lib", "genconf"), self.var,
                        str(self.base)], check=True, env=env, stdout=subprocess.DEVNULL)
        self.config = os.path.join(self.var, "sendarix.conf")
        if config_edit:
            with open(self.config) as f:
                text = f.read()
            with open(self.config, "w") as f:
                f.write(config_edit(text))
        self.cert = os.path.join(self.var, "tls", "cert.pem")
        self.maildir = os.path.join(self.var, "sandbox", "maildir", "new")
        self.procs = {}

    # ---- processes ----

    def spawn(self, service, instance=1):
        key = "%s-%d" % (service, instance)
        binary = "sendarixctl" if service == "ctl" else "sendarix-" + service
        log = open(os.path.join(self.var, "log", key + ".log"), "ab")
        proc = subprocess.Popen([os.path.join(BIN, binary), "--config", self.config,
                                 "--instance", str(instance)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=self.var)
        log.close()
        self.procs[key] = proc
        return proc

    def start(self, services=ALL_SERVICES, wait=True):
        for svc in services:
            self.spawn(svc)
        if wait:
            self.wait_up(services)
        return self

    def wait_up(self, services=ALL_SERVICES, timeout=20):
        def up():
            for key, p in self.procs.items():
                if p.poll() is not None:
                    raise AssertionError("%s exited with %s:\n%s" % (key, p.returncode,
                                                                   self.log(key)))
            r = self.ctl("status", check=False)
            if not isinstance(r, dict):
                return False
            states = {s["service"]: s["up"] for s in r.get("services", [])}
            return all(states.get(s) for s in services)
        wait_for(up, timeout=timeout, what="services %s up" % ",".join(services))

    def kill(self, service, instance=1, sig=signal.SIGKILL):
        key = "%s-%d" % (service, instance)
        p = self.procs.get(key)
        if p and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=10)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for key, p in self.procs.items():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}

    def cleanup(self):
        self.stop()
        if os.environ.get("SENDARIX_KEEP_VAR") != "1":
            shutil.rmtree(self.var, ignore_errors=True)

    def _settled(self, key, timeout=1.0):
        """Wait until the service's loop sleeps in epoll_wait: services hold a
        turn's log lines and write them just before the loop waits, so a
        line of the turn that produced what the test saw is then in the file."""
        proc = self.procs.get(key)
        if proc is None or proc.poll() is not None:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open("/proc/%d/syscall" % proc.pid) as f:
                    nr = f.read().split()[0]
            except (OSError, IndexError):
                return
            if nr in ("232", "281"):  # epoll_wait, epoll_pwait (x86-64)
                return
            time.sleep(0.002)

    def log(self, key):
        if "-" not in key:
            key += "-1"
        self._settled(key)
        try:
            with open(os.path.join(self.var, "log", key + ".log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # ---- the CLI ----

    def ctl_run(self, *args, json_out=True, input=None):
        cmd = [os.path.join(BIN, "sendarixctl"), "--config", self.config]
        if json_out:
            cmd.append("--json")
        cmd += list(args)
        return subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=30)

    def ctl(self, *args, check=True, input=None):
        """Run sendarixctl --json ARGS; return the parsed JSON document."""
        r = self.ctl_run(*args, input=input)
        if check and r.returncode != 0:
            raise AssertionError("sendarixctl %s exited %d: %s %s" % (" ".join(args), r.returncode,
                                                                    r.stdout, r.stderr))
        try:
            return json.loads(r.stdout)
        except ValueError:
            if check:
                raise AssertionError("sendarixctl %s printed no JSON: %r" % (" ".join(args),
                                                                             r.stdout))
            return None

    def add_demo_credential(self, user="demo", password="demo-password", tenant="demo",
                            domain="example.test"):
        self.ctl("tenant", "add", tenant)
        self.ctl("domain", "add", domain, "--tenant", tenant, "--verified")
        self.ctl("cred", "add", user, "--tenant", tenant, "--password-stdin",
                 input=password + "\n")

    # ---- the sandbox's Maildir ----

    def maildir_files(self):
        try:
            names = sorted(os.listdir(self.maildir))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            with open(os.path.join(self.maildir, n), "rb") as f:
                out.append((n, f.read()))
        return out

    def wait_maildir(self, count=1, timeout=20):
        return wait_for(lambda: len(self.maildir_files()) >= count and self.maildir_files(),
                        timeout=timeout, what="%d message(s) in the sandbox Maildir" % count)
