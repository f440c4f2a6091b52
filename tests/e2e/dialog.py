"""Scripted SMTP dialogs: read a .dialog file and play it against a live relay.

A dialog is one client connection, written as what the client sends and what
the server must answer (tests/dialogs/README.md describes the format). The
runner fails on the first mismatch with the dialog line, what was expected,
what came back, and the transcript so far. Besides the lines a dialog names,
it checks every reply it reads: lines end with CRLF, a multi-line reply keeps
one code, and every 2xx/4xx/5xx reply carries an enhanced status code
(RFC 2034), except the 220 greeting and the answers to EHLO and HELO.
"""
import base64
import json
import os
import re
import select
import socket
import ssl
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOSTNAME = "relay.sendarix.test"
DEMO_USER, DEMO_PASSWORD = "demo", "demo-password"
READ_TIMEOUT = 10.0      # how long an S: line waits for its reply
DELIVERY_TIMEOUT = 20.0  # how long an M: line waits for the sandbox
SETTLE = 2.0             # how long sandbox!: waits before looking

HEADER_KEYS = {"role", "config", "login", "source", "isolate", "timeout", "hold", "xfail",
               "pending"}
ROLES = ("submission", "smtps", "legacy")
LOGINS = ("none", "ehlo", "tls", "demo")

ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}( |$)")


class DialogError(AssertionError):
    pass


class Step:
    def __init__(self, kind, arg, lineno, text):
        self.kind = kind      # send, raw, expect, expect_many, expect_none, expect_some, ...
        self.arg = arg
        self.lineno = lineno  # 0 for steps the runner adds itself (login)
        self.text = text      # the dialog line, for messages

    def __repr__(self):
        return "Step(%s, %r, line %d)" % (self.kind, self.arg, self.lineno)


class Dialog:
    def __init__(self, path):
        self.path = path
        self.title = ""
        self.role = "submission"
        self.config = []       # [(section, name, value text)]
        self.login = "none"
        self.source = None
        self.isolate = False
        self.timeout = READ_TIMEOUT
        self.hold = 0
        self.xfail = None      # relay bug: strict xfail
        self.pending = None    # feature not landed: non-strict xfail
        self.steps = []

    @property
    def config_key(self):
        return tuple(self.config)

    def port(self, relay):
        return {"submission": relay.submission, "smtps": relay.smtps,
                "legacy": relay.legacy}[self.role]


# ---- parsing ----

_EXPAND = re.compile(r"\{([^{}*]+)\*(\d+)\}")


def expand(text, index=None):
    """{TEXT*N} repeats TEXT N times; {i} is the repeat counter."""
    if index is not None:
        text = text.replace("{i}", str(index))
    while True:  # innermost first, so {{ab*2}c*3} works
        out = _EXPAND.sub(lambda m: m.group(1) * int(m.group(2)), text)
        if out == text:
            return out
        text = out


def unescape(text):
    """Bytes of a C>, M= or trickle line: \\r \\n \\t \\\\ \\xHH, the rest as UTF-8."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out += c.encode("utf-8")
            i += 1
            continue
        n = text[i + 1]
        if n in "rnt\\":
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}[n]
            i += 2
        elif n == "x" and re.match(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise ValueError("unknown escape \\%s" % n)
    return bytes(out)


def split_settings(text):
    """'a = 1; b = "x;y"; c = [ "p", "q" ];' -> ['a = 1', 'b = "x;y"', ...]."""
    out, cur, depth, quote = [], "", 0, False
    for c in text:
        if c == '"':
            quote = not quote
        elif not quote and c in "[({":
            depth += 1
        elif not quote and c in "])}":
            depth -= 1
        if c == ";" and not quote and depth == 0:
            if cur.strip():
                out.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_setting(text, default_section="ingress"):
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.+)$", text, re.S)
    if not m:
        raise ValueError("not a setting: %r" % text)
    name, value = m.group(1), m.group(2).strip()
    section = default_section
    if "." in name:
        section, name = name.split(".", 1)
    return section, name, value


def parse_text(text, path="<dialog>"):
    d = Dialog(path)
    lines = text.split("\n")
    steps = []
    stack = []          # open repeat blocks: (count, start index in steps, lineno)
    in_header = True
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if in_header and not d.title:
                d.title = stripped.lstrip("#").strip()
            continue

        def bad(why):
            return ValueError("%s:%d: %s: %r" % (path, lineno, why, line))

        m = re.match(r"^([a-z]+):\s*(.*)$", stripped)
        if in_header and m and m.group(1) in HEADER_KEYS:
            key, val = m.group(1), m.group(2).strip()
            if key == "role":
                if val not in ROLES:
                    raise bad("role is one of %s" % ", ".join(ROLES))
                d.role = val
            elif key == "config":
                for s in split_settings(val):
                    d.config.append(parse_setting(s))
            elif key == "login":
                if val not in LOGINS:
                    raise bad("login is one of %s" % ", ".join(LOGINS))
                d.login = val
            elif key == "source":
                d.source = val
            elif key == "isolate":
                d.isolate = val.lower() in ("yes", "true", "1")
            elif key == "timeout":
                d.timeout = float(val)
            elif key == "hold":
                d.hold = int(val)
            elif key in ("xfail", "pending"):
                setattr(d, key, val)
            continue
        in_header = False
        if stripped.startswith("repeat "):
            stack.append((int(stripped.split()[1]), len(steps), lineno))
            continue
        if stripped == "end":
            if not stack:
                raise bad("end without repeat")
            count, start, _ = stack.pop()
            body = steps[start:]
            del steps[start:]
            for i in range(1, count + 1):
                for st in body:
                    steps.append(Step(st.kind, with_index(st.arg, i), st.lineno, st.text))
            continue
        try:
            steps.append(parse_step(line, lineno))
        except ValueError as e:
            raise bad(str(e))
    if stack:
        raise ValueError("%s:%d: repeat without end" % (path, stack[-1][2]))
    if d.role == "legacy" and d.login == "demo":
        raise ValueError("%s: login: demo is not possible on the legacy role" % path)
    d.steps = steps
    return d


def with_index(arg, i):
    """A step argument with {i} replaced by a repeat block's counter."""
    if isinstance(arg, bytes):
        return arg.replace(b"{i}", str(i).encode())
    if isinstance(arg, str):
        return arg.replace("{i}", str(i))
    if isinstance(arg, Pattern):
        return Pattern(arg.text.replace("{i}", str(i)))
    if isinstance(arg, tuple):
        return tuple(with_index(a, i) for a in arg)
    return arg


def parse_step(line, lineno):
    """One step line; {i} of a repeat block is filled in later (with_index)."""
    def exp_bytes(s):
        return unescape(expand(s))

    stripped = line.strip()
    m = re.match(r"^(C:|C>|S:|S\*:|S!:|S\+:|M:|M!:|M=|E:) ?(.*)$", line)
    if m:
        tag, rest = m.group(1), m.group(2)
        if tag == "C:":
            return Step("send", expand(rest).encode("utf-8") + b"\r\n", lineno, line)
        if tag == "C>":
            return Step("raw", exp_bytes(rest), lineno, line)
        kind = {"S:": "expect", "S*:": "expect_many", "S!:": "expect_none",
                "S+:": "expect_some", "M:": "message_line", "M!:": "message_no_line",
                "M=": "message_body", "E:": "envelope"}[tag]
        if kind == "message_body":
            return Step(kind, exp_bytes(rest), lineno, line)
        if kind == "envelope":
            em = re.match(r"^([A-Za-z0-9_.]+)\s*=\s?(.*)$", rest)
            if not em:
                raise ValueError("E: needs key = pattern")
            return Step(kind, (em.group(1), compile_pattern(em.group(2).rstrip())), lineno, line)
        return Step(kind, compile_pattern(expand(rest.rstrip())), lineno, line)
    words = stripped.split(None, 1)
    word = words[0].rstrip(":")
    if stripped in ("tls", "close", "mark"):
        return Step(stripped, None, lineno, line)
    if word in ("sleep", "silence"):
        return Step(word, float(words[1]), lineno, line)
    if word == "elapsed":
        lo, _, hi = words[1].partition("..")
        return Step("elapsed", (float(lo), float(hi)), lineno, line)
    if word == "trickle":
        tm = re.match(r"^trickle\s+([0-9.]+):\s?(.*)$", stripped)
        if not tm:
            raise ValueError("trickle SECONDS: BYTES")
        return Step("trickle", (float(tm.group(1)), exp_bytes(tm.group(2))), lineno, line)
    if word == "sandbox!":
        return Step("sandbox_none", unescape(words[1]) if len(words) > 1 else b"", lineno, line)
    raise ValueError("unknown line")


def parse(path):
    with open(path, encoding="utf-8") as f:
        return parse_text(f.read(), path)


class Pattern:
    """A glob with * (any text), or /regex/; matched against the whole line."""

    def __init__(self, text):
        self.text = text
        if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
            self.rx = re.compile(text[1:-1], re.S)
        else:
            self.rx = re.compile(".*".join(re.escape(p) for p in text.split("*")), re.S)

    def match(self, s):
        return self.rx.fullmatch(s) is not None

    def __repr__(self):
        return self.text


def compile_pattern(text):
    return Pattern(text)


# ---- config ----

def edit_config(text, settings):
    """Set [(section, name, value)] in a libconfig text: replace the line that
    sets name in that section, or add it at the top of the section."""
    for section, name, value in settings:
        m = re.search(r"^%s = \{\n" % re.escape(section), text, re.M)
        if not m:
            raise ValueError("config has no section %s" % section)
        start = m.end()
        end = re.compile(r"^\};", re.M).search(text, start).start()
        body = text[start:end]
        line = "  %s = %s;" % (name, value)
        rx = re.compile(r"^\s*%s\s*=.*;\s*$" % re.escape(name), re.M)
        if rx.search(body):
            body = rx.sub(lambda _m: line, body, count=1)
        else:
            body = line + "\n" + body
        text = text[:start] + body + text[end:]
    return text


def config_editor(settings):
    return lambda text: edit_config(text, settings)


# ---- the demo login ----

def auth_endpoint(relay):
    with open(relay.config) as f:
        m = re.search(r'^\s*auth = \[ "([^"]+)"', f.read(), re.M)
    return m.group(1)


def add_verified_domain(relay, domain="example.test", tenant="demo"):
    """Add a sending domain, verified (only verified domains may be sent
    from): with sendarixctl when it knows --verified, else with the
    AuthDomainAdd request sendarixctl sends, over the bus."""
    r = relay.ctl_run("domain", "add", domain, "--tenant", tenant, "--verified")
    if r.returncode == 0:
        return
    from buslib import Bus, msg
    with Bus(auth_endpoint(relay)) as bus:
        body, reply, _ = bus.request("auth_domain_add", msg("AuthDomainAdd", domain=domain,
                                                            tenant=tenant, verified=True),
                                     timeout=10)
    if body != "auth_domain_add_reply" or not reply.verified:
        raise AssertionError("could not add %s verified: %s %s" % (domain, body, reply))


def add_demo_login(relay, user=DEMO_USER, password=DEMO_PASSWORD, tenant="demo",
                   domain="example.test"):
    """The demo tenant, its verified domain example.test and the demo credential."""
    relay.ctl("tenant", "add", tenant)
    add_verified_domain(relay, domain, tenant)
    relay.ctl("cred", "add", user, "--tenant", tenant, "--password-stdin",
              input=password + "\n")


# ---- the connection ----

def _show(data):
    """A transcript rendering of bytes: text as is, control bytes escaped."""
    s = data.decode("utf-8", "backslashreplace")
    s = s.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return s if len(s) <= 300 else s[:300] + "...(%d bytes)" % len(data)


def tls_client_context(cafile=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Connection:
    """One client connection: a byte buffer, reply lines, a transcript."""

    def __init__(self, host, port, source=None, timeout=READ_TIMEOUT, cafile=None):
        self.cafile = cafile
        self.timeout = timeout
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=src)
        self.buf = b""
        self.eof = False
        self.lines = []        # reply lines read and not yet consumed
        self.replies = 0       # complete replies read on this connection
        self.pending = []      # lines of a reply whose last line has not come yet
        self.current = []      # every line of the reply the last S line looked at
        self.current_done = False
        self.transcript = []
        self.notes = []        # reply-format problems found while reading
        self.hostname = HOSTNAME

    # -- low level --

    def start_tls(self):
        if self.buf:
            raise DialogError("the server sent bytes before the TLS handshake: %r" % self.buf)
        ctx = tls_client_context(self.cafile)
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.hostname)
        self.transcript.append("-- TLS %s %s" % (self.sock.version(), self.sock.cipher()[0]))

    def _readable(self, timeout):
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        return bool(r)

    def fill(self, timeout):
        """Read what arrives within timeout; False on timeout, True on data or EOF."""
        if self.eof:
            return True
        if not self._readable(timeout):
            return False
        # never block in recv: a TLS record that is not application data
        # (a session ticket) makes the socket readable without any bytes
        self.sock.settimeout(0)
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, socket.timeout):
            return False
        except (ssl.SSLError, OSError) as e:
            self.transcript.append("-- connection error: %s" % e)
            data = b""
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.eof = True
            self.transcript.append("-- closed by the server")
            return True
        self.buf += data
        self._split()
        return True

    def _split(self):
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                return
            raw, self.buf = self.buf[:i + 1], self.buf[i + 1:]
            if not raw.endswith(b"\r\n"):
                self.notes.append("reply line not ended by CRLF: %r" % raw)
            line = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
            self.transcript.append("S: " + line)
            self.lines.append(line)
            self.pending.append(line)
            if len(line) < 4 or line[3] != "-":
                self._reply_done(self.pending)
                self.pending = []

    def _reply_done(self, reply):
        """Checks that hold for every reply, whatever the dialog expects."""
        self.replies += 1
        first = reply[0]
        m = re.match(r"^(\d{3})([ -]|$)", first)
        if not m:
            self.notes.append("reply line without a 3-digit code: %r" % first)
            return
        code = m.group(1)
        for ln in reply:
            if ln[:3] != code:
                self.notes.append("multi-line reply changes code: %r" % reply)
        if code[0] == "3":
            return  # 334 challenges and 354 carry no enhanced code
        if code == "220" and self.replies == 1:
            return  # the greeting
        if code == "250" and re.fullmatch(r"250[ -]%s( Hello .*)?" % re.escape(self.hostname),
                                          first):
            return  # the answer to EHLO or HELO
        for ln in reply:
            if not ENHANCED.match(ln[4:]):
                self.notes.append("reply without an enhanced status code: %r" % ln)

    def next_line(self, timeout):
        deadline = time.time() + timeout
        while not self.lines:
            if self.eof:
                return None
            if not self.fill(deadline - time.time()) and time.time() >= deadline:
                return None
        line = self.lines.pop(0)
        if not self.current_done and self.current:
            self.current.append(line)
        else:
            self.current = [line]
        self.current_done = len(line) < 4 or line[3] != "-"
        return line

    def peek_rest_of_reply(self, timeout):
        """Read until the reply the last consumed line belongs to is complete;
        return all of its lines (consumed or not) without consuming more."""
        if not self.current:
            return []
        deadline = time.time() + timeout
        while True:
            lines = list(self.current)
            if self.current_done:
                return lines
            for ln in self.lines:
                lines.append(ln)
                if len(ln) < 4 or ln[3] != "-":
                    return lines
            if self.eof or (not self.fill(deadline - time.time()) and time.time() >= deadline):
                return lines

    def send(self, data, label="C: "):
        if label == "C: ":
            self.transcript.append("C: " + data[:-2].decode("utf-8", "backslashreplace"))
        else:
            self.transcript.append(label + _show(data))
        return self.send_quiet(data)

    def send_quiet(self, data):
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError) as e:
            self.transcript.append("-- send failed: %s" % e)
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- running ----

def login_steps(dialog):
    """The steps login: adds in front of the dialog's own."""
    if dialog.login == "none":
        return []
    steps = [Step("expect", Pattern("220 *"), 0, "S: 220 * (login)")]
    ehlo = [Step("send", b"EHLO dialog.example\r\n", 0, "C: EHLO dialog.example (login)"),
            Step("expect_many", Pattern("250-*"), 0, "S*: 250-* (login)"),
            Step("expect", Pattern("250 *"), 0, "S: 250 * (login)")]
    steps += ehlo
    if dialog.login in ("tls", "demo") and dialog.role != "smtps":
        steps += [Step("send", b"STARTTLS\r\n", 0, "C: STARTTLS (login)"),
                  Step("expect", Pattern("220 2.0.0 *"), 0, "S: 220 2.0.0 * (login)"),
                  Step("tls", None, 0, "tls (login)")] + ehlo
    if dialog.login == "demo":
        cred = base64.b64encode(("\0%s\0%s" % (DEMO_USER, DEMO_PASSWORD)).encode()).decode()
        steps += [Step("send", ("AUTH PLAIN %s\r\n" % cred).encode(), 0, "C: AUTH PLAIN (login)"),
                  Step("expect", Pattern("235 2.7.0 *"), 0, "S: 235 2.7.0 * (login)")]
    return steps


def flatten(doc, prefix=""):
    out = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(flatten(v, prefix + k + "."))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.update(flatten(v, prefix + str(i) + "."))
    else:
        out[prefix[:-1]] = "" if doc is None else (
            json.dumps(doc) if isinstance(doc, bool) else str(doc))
    return out


def split_trace(data):
    """A sandbox file without its Return-Path, Delivered-To, DKIM-Signature
    (the relay signs mail of domains with keys) and Received lines."""
    lines = data.split(b"\r\n")
    i = 0
    while i < len(lines) and (lines[i].startswith(b"Return-Path:") or
                              lines[i].startswith(b"Delivered-To:")):
        i += 1
    while i < len(lines) and lines[i].startswith(b"DKIM-Signature:"):
        i += 1
        while i < len(lines) and lines[i].startswith(b"\t"):
            i += 1
    if i < len(lines) and lines[i].startswith(b"Received: from "):
        i += 1
        while i < len(lines) and lines[i].startswith(b"\t"):
            i += 1
    return b"\r\n".join(lines[i:])


class Runner:
    def __init__(self, dialog, relay, hostname=HOSTNAME):
        self.d = dialog
        self.relay = relay
        self.hostname = hostname
        self.conn = None
        self.held = []
        self.queued = []       # queue ids from "250 2.0.0 OK: queued as ID"
        self.marked = time.time()
        self.step = None
        self.prev_kind = None

    # -- failure --

    def fail(self, what, received=None):
        st = self.step
        path = self.d.path
        if os.path.isabs(path) and path.startswith(ROOT + os.sep):
            path = os.path.relpath(path, ROOT)
        where = "%s:%d" % (path, st.lineno) if st and st.lineno else path
        msg = ["dialog failed at %s" % where]
        if st is not None:
            msg.append("  step:     %s" % st.text.strip())
        msg.append("  problem:  %s" % what)
        if received is not None:
            if received != received.strip():
                received = repr(received)
            msg.append("  received: %s" % received)
        if self.conn:
            tr = self.conn.transcript
            msg.append("transcript%s:" % (" (last 120 lines)" if len(tr) > 120 else ""))
            msg += ["  " + t for t in tr[-120:]]
        log = self.relay.log("ingress-1").splitlines() if hasattr(self.relay, "log") else []
        if log:
            msg.append("ingress log (last 15 lines):")
            msg += ["  " + ln for ln in log[-15:]]
        raise DialogError("\n".join(msg))

    # -- the dialog --

    def run(self):
        try:
            self._connect()
            for st in login_steps(self.d) + self.d.steps:
                self.step = st
                getattr(self, "do_" + st.kind)(st.arg)
                self._check_notes()
                self.prev_kind = st.kind
            self.step = None
            self._check_notes()
            if self.conn and not self.conn.eof:
                # nothing may be left unanswered or unexpected at the end
                self.conn.fill(0.2)
                if self.conn.lines:
                    self.fail("the server sent replies the dialog does not expect",
                              " | ".join(self.conn.lines))
            return self.conn.transcript if self.conn else []
        finally:
            for c in self.held:
                c.close()
            if self.conn:
                self.conn.close()

    def _check_notes(self):
        if self.conn and self.conn.notes:
            notes, self.conn.notes = self.conn.notes, []
            self.fail("; ".join(notes))

    def _connect(self):
        port = self.d.port(self.relay)
        for _ in range(self.d.hold):
            c = Connection("127.0.0.1", port, self.d.source, self.d.timeout, self.relay.cert)
            c.hostname = self.hostname
            if self.d.role == "smtps":
                c.start_tls()
            line = c.next_line(self.d.timeout)
            if line is None or not line.startswith("220 "):
                self.fail("a held connection got %r instead of a 220 greeting" % line)
            self.held.append(c)
        self.conn = Connection("127.0.0.1", port, self.d.source, self.d.timeout, self.relay.cert)
        self.conn.hostname = self.hostname
        self.conn.transcript.append("-- connected to %s port %d (%s)" % (
            self.d.role, port, self.d.source or "127.0.0.1"))
        if self.d.role == "smtps":
            try:
                self.conn.start_tls()
            except (ssl.SSLError, OSError) as e:
                self.fail("implicit TLS handshake failed: %s" % e)

    def _unexpected_before_send(self):
        if self.prev_kind in ("send", "raw", "trickle", None):
            return
        self.conn.fill(0.005)
        if self.conn.lines:
            self.fail("the server sent a reply the dialog does not expect before this line",
                      " | ".join(self.conn.lines))

    def do_send(self, data):
        self._unexpected_before_send()
        self.conn.send(data)

    def do_raw(self, data):
        self._unexpected_before_send()
        self.conn.send(data, "C> ")

    def do_trickle(self, arg):
        interval, data = arg
        self._unexpected_before_send()
        self.conn.transcript.append("-- trickle one byte every %gs: %s" % (interval, _show(data)))
        for i in range(len(data)):
            if self.conn.lines or self.conn.eof:
                self.conn.transcript.append("-- trickle stopped after %d bytes" % i)
                return
            if not self.conn.send_quiet(data[i:i + 1]):
                return
            deadline = time.time() + interval
            while not self.conn.lines and not self.conn.eof and time.time() < deadline:
                self.conn.fill(deadline - time.time())

    def _line(self, pattern):
        line = self.conn.next_line(self.d.timeout)
        if line is None:
            self.fail("expected %r but %s" % (
                pattern.text, "the server closed the connection" if self.conn.eof
                else "nothing came within %gs" % self.d.timeout))
        m = re.match(r"^250 2\.0\.0 OK: queued as (\S+)$", line)
        if m:
            self.queued.append(m.group(1))
        return line

    def do_expect(self, pattern):
        line = self._line(pattern)
        if not pattern.match(line):
            self.fail("expected %r" % pattern.text, line)

    def do_expect_many(self, pattern):
        """One line or more matching pattern, within one reply."""
        line = self._line(pattern)
        if not pattern.match(line):
            self.fail("expected %r" % pattern.text, line)
        while not self.conn.current_done:
            nxt = self.conn.peek_rest_of_reply(self.d.timeout)
            ahead = nxt[len(self.conn.current)] if len(nxt) > len(self.conn.current) else None
            if ahead is None or not pattern.match(ahead):
                return
            self.conn.next_line(self.d.timeout)

    def _reply(self):
        if not self.conn.current:
            self.fail("S! and S+ look at the reply of the S line before them; there is none")
        return self.conn.peek_rest_of_reply(self.d.timeout)

    def do_expect_none(self, pattern):
        for ln in self._reply():
            if pattern.match(ln):
                self.fail("no line of this reply may match %r" % pattern.text, ln)

    def do_expect_some(self, pattern):
        reply = self._reply()
        if not any(pattern.match(ln) for ln in reply):
            self.fail("some line of this reply must match %r" % pattern.text, " | ".join(reply))

    def do_tls(self, _):
        try:
            self.conn.start_tls()
        except (ssl.SSLError, OSError) as e:
            self.fail("TLS handshake failed: %s" % e)

    def do_close(self, _):
        deadline = time.time() + self.d.timeout
        while not self.conn.eof and not self.conn.lines:
            if not self.conn.fill(deadline - time.time()) and time.time() >= deadline:
                self.fail("expected the server to close the connection; it is still open "
                          "after %gs" % self.d.timeout)
        if self.conn.lines:
            self.fail("expected the server to close the connection, but it sent more",
                      " | ".join(self.conn.lines))

    def do_silence(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline and not self.conn.eof:
            self.conn.fill(deadline - time.time())
            if self.conn.lines:
                self.fail("expected no reply for %gs" % seconds, " | ".join(self.conn.lines))
        if self.conn.eof:
            self.fail("expected no reply for %gs, but the server closed the connection"
                      % seconds)

    def do_sleep(self, seconds):
        time.sleep(seconds)

    def do_mark(self, _):
        self.marked = time.time()

    def do_elapsed(self, bounds):
        lo, hi = bounds
        took = time.time() - self.marked
        self.conn.transcript.append("-- %.2fs since mark" % took)
        if not lo <= took <= hi:
            self.fail("expected %g..%gs since mark, took %.2fs" % (lo, hi, took))

    # -- what became of the message --

    def _last_id(self):
        if not self.queued:
            self.fail("no message was queued in this dialog (no '250 2.0.0 OK: queued as')")
        return self.queued[-1]

    def _files(self, msgid):
        tag = (" id %s" % msgid).encode()
        return [(n, d) for n, d in self.relay.maildir_files() if tag in d[:4096]]

    def _poll_files(self, msgid, ok):
        deadline = time.time() + DELIVERY_TIMEOUT
        files = []
        while time.time() < deadline:
            files = self._files(msgid)
            if files and ok(files):
                return files, True
            time.sleep(0.2)
        return files, False

    def do_message_line(self, pattern):
        msgid = self._last_id()

        def has(files):
            return any(pattern.match(ln.decode("utf-8", "backslashreplace"))
                       for _, d in files for ln in d.split(b"\r\n"))
        files, ok = self._poll_files(msgid, has)
        if not ok:
            self.fail("no line of the stored message %s matches %r" % (msgid, pattern.text),
                      " || ".join(_show(d[:600]) for _, d in files) or "no file in the sandbox")

    def do_message_no_line(self, pattern):
        msgid = self._last_id()
        files, ok = self._poll_files(msgid, lambda f: True)
        if not ok:
            self.fail("message %s did not reach the sandbox" % msgid)
        for _, d in files:
            for ln in d.split(b"\r\n"):
                if pattern.match(ln.decode("utf-8", "backslashreplace")):
                    self.fail("no line of the stored message may match %r" % pattern.text,
                              _show(ln))

    def do_message_body(self, expected):
        msgid = self._last_id()
        files, ok = self._poll_files(msgid, lambda f: True)
        if not ok:
            self.fail("message %s did not reach the sandbox" % msgid)
        for _, d in files:
            got = split_trace(d)
            if got != expected:
                self.fail("the stored message (after its trace lines) differs:\n"
                          "  expected: %r\n  stored:   %r" % (expected, got))

    def do_envelope(self, arg):
        key, pattern = arg
        msgid = self._last_id()
        doc = self.relay.ctl("queue", "show", msgid)
        flat = flatten(doc)
        if key not in flat:
            self.fail("queue show %s has no %s" % (msgid, key),
                      ", ".join("%s=%s" % kv for kv in sorted(flat.items())))
        if not pattern.match(flat[key]):
            self.fail("queue show %s: %s must match %r" % (msgid, key, pattern.text), flat[key])

    def do_sandbox_none(self, needle):
        time.sleep(SETTLE)
        for name, data in self.relay.maildir_files():
            if needle in data:
                self.fail("the sandbox holds a message with %r (%s)" % (needle, name),
                          _show(data[:600]))


def run(dialog, relay, hostname=HOSTNAME):
    """Play a parsed dialog against a started relay; raise DialogError on a mismatch."""
    return Runner(dialog, relay, hostname).run()
