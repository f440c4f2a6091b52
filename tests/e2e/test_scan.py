"""Content scanning end to end, with a real rspamd on loopback.

The scanner runs from tests/e2e/rspamd/ (one normal worker on 127.0.0.1, no
controller or proxy, no Redis, no DNS beyond loopback; GTUBE from the core
and SENDARIX_TEST_SCORE, whose weight a message picks with an X-Test-Score
header). First the scanner itself is checked with curl; then the relay,
with `scan` in its ingress section, must refuse GTUBE with 554 5.7.1, mark
clean mail with X-Spam-* lines, apply a tenant's own threshold, follow
on_failure when the scanner is gone, and not let a silent scanner hold a
session past the scan timeout."""
import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import ROOT, free_port_block, wait_for

RSPAMD_CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rspamd")
RSPAMD_START_TIMEOUT = 90
USER, PASSWORD = "demo", "demo-password"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(subject, body, extra=b"", frm=b"app@example.test"):
    return (b"From: App <" + frm + b">\r\n"
            b"To: Someone <someone@example.org>\r\n"
            b"Subject: " + subject + b"\r\n" + extra +
            b"Message-ID: <" + subject.replace(b" ", b"-") + b"@example.test>\r\n"
            b"\r\n" + body + b"\r\n")


GTUBE_MESSAGE = message(b"gtube", b"This is the GTUBE.\r\n" + GTUBE.encode())
CLEAN_MESSAGE = message(b"clean", b"Just a note about tomorrow's meeting.")


def scored_message(score, frm=b"app@example.test"):
    return message(b"scored " + str(score).encode(), b"a message with a chosen score",
                   extra=b"X-Test-Score: " + str(score).encode() + b"\r\n", frm=frm)


def scanner_wired():
    """True once ingress calls the scanner (some ingress file other than the module starts it)."""
    d = os.path.join(ROOT, "services", "ingress")
    for name in os.listdir(d):
        if not name.endswith(".c") or name == "ingress_scan.c":
            continue
        with open(os.path.join(d, name), errors="replace") as f:
            text = f.read()
        if "scanner_new(" in text or "scan_start(" in text:
            return True
    return False


relay_level = pytest.mark.skipif(
    not scanner_wired(),
    reason="ingress does not call the content scanner yet (no scanner_new/scan_start "
           "outside services/ingress/ingress_scan.c)")


# ---- rspamd ----

def rspamd_binary():
    path = shutil.which("rspamd")
    if path:
        return path
    # the test installs what it needs when it can (scripts/test installs it too)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "rspamd"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=900)
    return shutil.which("rspamd")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=2):
    """A tiny HTTP/1.0 GET on 127.0.0.1; the body, or None when nobody answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            c.sendall(("GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    _, _, body = data.partition(b"\r\n\r\n")
    return body


class Rspamd:
    """One rspamd with its pid file, log, state and temporary files under tmp."""

    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = str(tmp)
        os.makedirs(self.tmp, exist_ok=True)
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d/checkv2" % self.port

    def start(self):
        cmd = [self.binary, "-f", "-c", os.path.join(RSPAMD_CONF_DIR, "rspamd.conf"),
               "--var=TESTDIR=" + RSPAMD_CONF_DIR, "--var=TMPDIR=" + self.tmp,
               "--var=PORT=%d" % self.port]
        if os.geteuid() == 0:
            cmd.append("-i")  # it refuses to run workers as root otherwise
        out = open(os.path.join(self.tmp, "stdout.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp,
                                     start_new_session=True)
        out.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("rspamd exited with %s:\n%s" % (self.proc.returncode,
                                                                     self.log()[-4000:]))
            body = http_get(self.port, "/ping")
            return body is not None and body.strip() == b"pong"
        wait_for(up, timeout=RSPAMD_START_TIMEOUT, interval=0.2, what="rspamd on port %d" %
                 self.port)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # the workers leave with the main process; make sure the port is closed
        wait_for(lambda: http_get(self.port, "/ping", timeout=0.5) is None, timeout=10,
                 what="rspamd gone from port %d" % self.port)

    def log(self):
        try:
            with open(os.path.join(self.tmp, "rspamd.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def pids(self):
        """The main process and its workers."""
        pids = {self.proc.pid}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.add(int(entry))
        return pids

    def check(self, data, headers=()):
        """POST data to /checkv2 with curl; the parsed reply."""
        cmd = ["curl", "-sS", "--max-time", "20", "--noproxy", "*", "--data-binary", "@-",
               "-H", "Expect:"]
        for h in headers:
            cmd += ["-H", h]
        cmd.append(self.url)
        out = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def rspamd_bin():
    path = rspamd_binary()
    if path is None:
        pytest.skip("rspamd is not installed and could not be installed")
    return path


@pytest.fixture(scope="module")
def rspamd(rspamd_bin, tmp_path_factory):
    r = Rspamd(rspamd_bin, tmp_path_factory.mktemp("rspamd")).start()
    yield r
    r.stop()


@pytest.fixture
def start_rspamd(rspamd_bin, tmp_path):
    """Factory for a scanner of the test's own, for tests that stop it."""
    started = []

    def start():
        r = Rspamd(rspamd_bin, tmp_path / ("rspamd-%d" % len(started))).start()
        started.append(r)
        return r
    yield start
    for r in started:
        r.stop()


# ---- the scanner alone ----

def listening_sockets(pids):
    """(proto, local address) of every listening TCP or bound UDP socket of pids."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open("/proc/net/" + proto) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # LISTEN
                continue
            if proto.startswith("udp") and set(remote.split(":")[0]) != {"0"}:
                continue  # connected (a DNS query to the loopback resolver), not listening
            found.append((proto, local))
    return found


def is_loopback(proto, local):
    addr = local.split(":")[0]
    if proto.endswith("6"):
        return addr in ("00000000000000000000000001000000",) or \
            addr.startswith("0000000000000000FFFF0000") and addr.endswith("7F")
    return addr.endswith("7F")  # 127.x.x.x, little-endian hex


def test_rspamd_listens_on_loopback_only(rspamd):
    socks = listening_sockets(rspamd.pids())
    assert socks, "rspamd has no listening socket"
    for proto, local in socks:
        assert is_loopback(proto, local), "rspamd listens on %s %s" % (proto, local)


def test_rspamd_rejects_gtube(rspamd):
    reply = rspamd.check(GTUBE_MESSAGE, ["IP: 127.0.0.1", "From: app@example.test",
                                         "Rcpt: someone@example.org", "User: demo",
                                         "Queue-Id: gtube-1", "Pass: all"])
    assert reply["action"] == "reject"
    assert "GTUBE" in reply["symbols"]
    assert reply["score"] >= reply["required_score"] == 15.0


def test_rspamd_passes_clean_and_scores_on_request(rspamd):
    reply = rspamd.check(CLEAN_MESSAGE, ["IP: 127.0.0.1", "From: app@example.test",
                                         "Rcpt: someone@example.org"])
    assert reply["action"] == "no action"
    assert reply["score"] < 4
    reply = rspamd.check(scored_message(10))
    assert reply["score"] == pytest.approx(10.0)
    assert "SENDARIX_TEST_SCORE" in reply["symbols"]


# ---- the relay with a scanner ----

def edit_ingress(extra):
    def edit(text):
        return text.replace("ingress = {\n", "ingress = {\n" + extra + "\n", 1)
    return edit


def scan_group(url, **settings):
    parts = ['url = "%s";' % url]
    for k, v in settings.items():
        parts.append("%s = %s;" % (k, v))
    return "  scan = { %s };" % " ".join(parts)


def tls_context(r):
    ctx = ssl.create_default_context(cafile=r.cert)
    ctx.check_hostname = False
    return ctx


def submit(r, data, user=USER, password=PASSWORD, frm="app@example.test"):
    """Submit over STARTTLS + AUTH; (code, text) of the reply to the message text."""
    with smtplib.SMTP("127.0.0.1", r.submission, timeout=30) as s:
        s.ehlo("client.example")
        s.starttls(context=tls_context(r))
        s.ehlo("client.example")
        s.login(user, password)
        s.mail(frm)
        s.rcpt("someone@example.org")
        code, text = s.data(data)
        assert s.noop()[0] == 250  # the session goes on
    return code, text.decode(errors="replace")


def make_scanning_relay(make_relay, url, **settings):
    r = make_relay(config_edit=edit_ingress(scan_group(url, **settings)))
    r.start()
    r.add_demo_credential()
    return r


def maildir_with(r, needle):
    def find():
        for name, data in r.maildir_files():
            if needle in data:
                return data
        return None
    return wait_for(find, timeout=20, what="a sandbox message containing %r" % needle)


@relay_level
def test_relay_refuses_gtube_and_marks_clean(make_relay, rspamd):
    r = make_scanning_relay(make_relay, rspamd.url)
    code, text = submit(r, GTUBE_MESSAGE)
    assert code == 554, text
    assert text.startswith("5.7.1 "), text
    code, text = submit(r, CLEAN_MESSAGE)
    assert code == 250, text
    data = maildir_with(r, b"Subject: clean")
    assert b"\r\nX-Spam-Score: " in data
    assert b"\r\nX-Spam-Status: No, score=" in data
    assert b" required=15.00\r\n" in data
    assert b"\r\nX-Spam-Action: no action\r\n" in data
    # the GTUBE never reached the sandbox
    time.sleep(1)
    assert not any(b"Subject: gtube" in d for _, d in r.maildir_files())
    assert "event=scanned" in r.log("ingress")


@relay_level
def test_relay_tenant_threshold(make_relay, rspamd):
    r = make_scanning_relay(make_relay, rspamd.url,
                            tenants='( { tenant = "demo"; reject_score = 8.0; } )')
    r.add_demo_credential(user="other", password="other-password", tenant="other",
                          domain="other.test")
    # demo's own threshold is 8: a score of 10 is refused
    code, text = submit(r, scored_message(10))
    assert code == 554, text
    assert "5.7.1" in text and "10.00 >= 8.00" in text, text
    # under it passes, marked against demo's threshold
    code, text = submit(r, scored_message(7))
    assert code == 250, text
    data = maildir_with(r, b"Subject: scored 7")
    assert b"X-Spam-Status: No, score=7.00 required=8.00\r\n" in data
    # another tenant has the default of 15
    code, text = submit(r, scored_message(10, frm=b"app@other.test"), user="other",
                        password="other-password", frm="app@other.test")
    assert code == 250, text
    data = maildir_with(r, b"Subject: scored 10")
    assert b"X-Spam-Score: 10.00\r\n" in data
    assert b"X-Spam-Status: No, score=10.00 required=15.00\r\n" in data
    assert b"X-Spam-Action: add header\r\n" in data


@relay_level
def test_relay_scanner_down_accepts_and_marks(make_relay, start_rspamd):
    scanner = start_rspamd()
    r = make_scanning_relay(make_relay, scanner.url, timeout='"5s"')
    code, text = submit(r, CLEAN_MESSAGE)
    assert code == 250, text
    maildir_with(r, b"X-Spam-Score: ")
    scanner.stop()
    code, text = submit(r, message(b"while down", b"the scanner is gone"))
    assert code == 250, text
    data = maildir_with(r, b"Subject: while down")
    assert b"X-Sendarix-Scan: unscanned (scanner unreachable)\r\n" in data
    assert b"X-Spam-Score" not in data.split(b"Subject: while down")[0]


@relay_level
def test_relay_scanner_down_tempfails(make_relay, start_rspamd):
    scanner = start_rspamd()
    r = make_scanning_relay(make_relay, scanner.url, on_failure='"tempfail"')
    code, text = submit(r, CLEAN_MESSAGE)
    assert code == 250, text
    scanner.stop()
    code, text = submit(r, message(b"while down", b"the scanner is gone"))
    assert code == 451, text
    assert text.startswith("4.7.1 "), text
    assert "Content scanner unavailable" in text
    time.sleep(1)
    assert not any(b"Subject: while down" in d for _, d in r.maildir_files())


class SilentScanner:
    """Accepts connections and reads, never answers: a scanner that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        deadline = time.time() + 120  # stops by itself
        while self.running and time.time() < deadline:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(0)
            self.conns.append(c)
            for c in self.conns:
                try:
                    c.recv(65536)
                except OSError:
                    pass

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


@relay_level
def test_relay_silent_scanner_does_not_hold_the_session(make_relay):
    silent = SilentScanner()
    try:
        r = make_scanning_relay(make_relay, "http://127.0.0.1:%d/checkv2" % silent.port,
                                timeout='"1s"')
        t0 = time.monotonic()
        code, text = submit(r, CLEAN_MESSAGE)
        took = time.monotonic() - t0
        assert code == 250, text
        assert took < 6, "the session waited %.1fs on a 1s scan timeout" % took
        data = maildir_with(r, b"Subject: clean")
        assert b"X-Sendarix-Scan: unscanned (scanner timeout)\r\n" in data
    finally:
        silent.close()


@relay_level
def test_relay_large_message_not_scanned(make_relay, rspamd):
    r = make_scanning_relay(make_relay, rspamd.url, max_size='"1K"')
    big = message(b"large", (GTUBE + "\r\n").encode() + (b"x" * 76 + b"\r\n") * 40)
    code, text = submit(r, big)
    assert code == 250, text  # over max_size: delivered unscanned, even a GTUBE
    data = maildir_with(r, b"Subject: large")
    assert b"X-Sendarix-Scan: unscanned (message larger than 1024 bytes)\r\n" in data
