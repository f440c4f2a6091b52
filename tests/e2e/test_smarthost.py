"""Smart hosts as the big providers run them, through the whole relay.

A message is submitted over STARTTLS + AUTH (as in test_relay.py), crosses
ingress, queue, router and delivery, and leaves through a smarthost route to
a small SMTP server run by the test (SmartHost below) on 127.0.0.8: it
speaks implicit TLS from the first byte (port 465 style) with a certificate
for relay.test signed by a test CA (mtasts.TestCA), or plaintext, offers
AUTH LOGIN and nothing else, checks the credentials and keeps what it
receives. relay.test resolves through a local DNS server (dnsserver.py) that
delivery uses as its resolver, and delivery trusts the test CA.

Checked here: an smtps:// endpoint gets TLS before anything else (the first
byte the server sees is a TLS record), no STARTTLS, AUTH LOGIN with the
route's user, the exact message; a wrong password is deferred 4.7.0 naming
the host with the server's reply, and the password is in no log; a route
with credentials whose server offers no TLS never sends them; routing by
the X-Sendarix-Stream header; the router refuses unknown schemes and
smtps:// with tls = "none".
"""
import base64
import os
import re
import socket
import ssl
import threading

import pytest

from dnsserver import DnsServer
from harness import submission_login, wait_for
from mtasts import TestCA

HOST_IP = "127.0.0.8"
HOST_NAME = "relay.test"
ROUTE_USER, ROUTE_PASSWORD = "relay-user@example.test", "s3cret-relay-pass"
USER, PASSWORD = "demo", "demo-password"

MESSAGE = (b"From: App <app@example.test>\r\n"
           b"To: Someone <someone@example.org>\r\n"
           b"Subject: through a smart host\r\n"
           b"Message-ID: <smarthost-1@example.test>\r\n"
           b"\r\n"
           b"first line\r\n"
           b".a line that starts with a dot\r\n"
           b"..two dots\r\n"
           b"\r\n"
           b"last line\r\n")


# ---- the smart host ----

class SmartHost:
    """A threaded SMTP server: implicit TLS (tls_ctx given) or plaintext, AUTH LOGIN only.

    Every connection becomes a dict in sessions: the first byte the client sent
    (peeked before TLS), the TLS version, every line received (raw), the user
    that tried AUTH and whether it was accepted. Each message taken is kept in
    messages as (mail_from, rcpts, data), data unstuffed and without the final
    dot line.
    """

    def __init__(self, user, password, tls_ctx=None, address=HOST_IP, name=HOST_NAME):
        self.user, self.password = user, password
        self.tls_ctx, self.name = tls_ctx, name
        self.lock = threading.Lock()
        self.sessions = []
        self.messages = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopped = True
        self.sock.close()

    def all_lines(self):
        with self.lock:
            return [line for s in self.sessions for line in s["lines"]]

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        sess = {"first": None, "tls": None, "lines": [], "user": None, "auth": None,
                "error": None}
        with self.lock:
            self.sessions.append(sess)
        c.settimeout(20)
        try:
            if self.tls_ctx is not None:
                # what the client sends first, before any greeting: a TLS record (0x16)
                sess["first"] = c.recv(1, socket.MSG_PEEK)
                c = self.tls_ctx.wrap_socket(c, server_side=True)
                sess["tls"] = c.version()
            self._dialog(c, sess)
        except (OSError, ssl.SSLError, EOFError, ValueError) as e:
            sess["error"] = repr(e)
        finally:
            c.close()

    def _dialog(self, c, sess):
        f = c.makefile("rb")

        def send(text):
            c.sendall(text.encode() + b"\r\n")

        def readline():
            line = f.readline(8192)
            if not line:
                raise EOFError("client closed")
            with self.lock:
                sess["lines"].append(line)
            return line.rstrip(b"\r\n")

        send("220 %s ESMTP test smart host" % self.name)
        authed, mail_from, rcpts = False, None, []
        while True:
            line = readline()
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                send("250-%s\r\n250-8BITMIME\r\n250-SIZE 10000000\r\n250 AUTH LOGIN" % self.name)
            elif verb == b"HELO":
                send("250 %s" % self.name)
            elif verb == b"AUTH":
                args = line.split(b" ")[1:]
                if not args or args[0].upper() != b"LOGIN":
                    send("504 5.5.4 Unrecognized authentication type")
                    continue
                try:
                    if len(args) > 1:
                        user = base64.b64decode(args[1], validate=True)
                    else:
                        send("334 VXNlcm5hbWU6")  # "Username:"
                        user = base64.b64decode(readline(), validate=True)
                    send("334 UGFzc3dvcmQ6")  # "Password:"
                    password = base64.b64decode(readline(), validate=True)
                except ValueError:
                    send("501 5.5.2 Cannot decode response")
                    continue
                sess["user"] = user.decode(errors="replace")
                if user == self.user.encode() and password == self.password.encode():
                    authed = True
                    sess["auth"] = "ok"
                    send("235 2.7.0 Authentication successful")
                else:
                    sess["auth"] = "refused"
                    send("535 5.7.8 Authentication credentials invalid")
            elif verb == b"STARTTLS":
                send("502 5.5.1 STARTTLS not offered")
            elif verb == b"MAIL":
                if not authed:
                    send("530 5.7.0 Authentication required")
                    continue
                m = re.match(rb"MAIL FROM:<([^>]*)>", line, re.I)
                mail_from, rcpts = m.group(1).decode() if m else None, []
                send("250 2.1.0 Ok")
            elif verb == b"RCPT":
                m = re.match(rb"RCPT TO:<([^>]*)>", line, re.I)
                if mail_from is None or not m:
                    send("503 5.5.1 MAIL first")
                    continue
                rcpts.append(m.group(1).decode())
                send("250 2.1.5 Ok")
            elif verb == b"DATA":
                if not rcpts:
                    send("503 5.5.1 RCPT first")
                    continue
                send("354 End data with <CR><LF>.<CR><LF>")
                data = []
                while True:
                    raw = f.readline(1 << 20)
                    if not raw:
                        raise EOFError("client closed in DATA")
                    if raw == b".\r\n":
                        break
                    data.append(raw[1:] if raw.startswith(b".") else raw)
                with self.lock:
                    self.messages.append((mail_from, list(rcpts), b"".join(data)))
                mail_from, rcpts = None, []
                send("250 2.0.0 Ok: queued")
            elif verb == b"RSET":
                mail_from, rcpts = None, []
                send("250 2.0.0 Ok")
            elif verb == b"NOOP":
                send("250 2.0.0 Ok")
            elif verb == b"QUIT":
                send("221 2.0.0 Bye")
                return
            else:
                send("500 5.5.2 Command unrecognized")


# ---- the relay ----

def replace_section(text, name, body):
    new = "%s = {\n%s};\n" % (name, body)
    out, n = re.subn(r"\n%s = \{\n.*?\n\};\n" % name, "\n" + new, text, count=1, flags=re.S)
    assert n == 1, "no %s section in the config" % name
    return out


def sandbox_port(text):
    return int(re.search(r"\nsandbox = \{[^}]*?port = (\d+);", text).group(1))


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def config(routes, delivery=""):
    """config_edit: routes is a function of the sandbox port giving the routes' text; debug
    logs, so a credential that leaked into a command line would be seen."""
    def edit(text):
        text = replace_section(text, "router", "  routes = (\n    %s\n  );\n"
                               % routes(sandbox_port(text)))
        text = replace_section(text, "delivery", "  slots = 8;\n%s" % delivery)
        return text.replace('log_level = "info";', 'log_level = "debug";', 1)
    return edit


@pytest.fixture
def dns():
    d = DnsServer().start()
    d.add(HOST_NAME, "A", HOST_IP)
    yield d
    d.stop()


@pytest.fixture
def ca(tmp_path):
    return TestCA(str(tmp_path))


@pytest.fixture
def hosts():
    made = []

    def make(*args, **kw):
        h = SmartHost(*args, **kw)
        made.append(h)
        return h
    yield make
    for h in made:
        h.stop()


def tls_server_ctx(ca):
    cert, key = ca.issue([HOST_NAME])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def start_relay(make_relay, edit, retry_base="60s"):
    # a long retry: what queue show says is the first attempt's outcome
    r = make_relay(retry_base=retry_base, config_edit=edit)
    r.start()
    r.add_demo_credential()
    return r


def submit(r, message=MESSAGE, rcpt="someone@example.org"):
    """STARTTLS + AUTH on the submission port; the queue id."""
    with submission_login(r, USER, PASSWORD) as s:
        s.mail("app@example.test")
        s.rcpt(rcpt)
        code, text = s.data(message)
    assert code == 250, (code, text)
    m = re.search(r"queued as ([0-9a-v]{20})", text.decode())
    assert m, text
    return m.group(1)


def relay_headers_removed(data):
    """The message as submitted: what the relay put in front (its DKIM signatures and its
    Received header) taken off. The Received header must be there."""
    lines = data.split(b"\r\n")
    i, received = 0, False
    while i < len(lines) and (lines[i].startswith((b"DKIM-Signature:", b"Received:"))
                              or (i > 0 and lines[i][:1] in (b"\t", b" "))):
        received = received or lines[i].startswith(b"Received:")
        i += 1
    assert received, data[:600]
    return b"\r\n".join(lines[i:])


def events_of(r, msgid):
    return r.ctl("log", "search", "--id", msgid)["events"]


def wait_event(r, msgid, etype, service=None, timeout=30):
    def found():
        return [e for e in events_of(r, msgid)
                if e["type"] == etype and (service is None or e["service"] == service)]
    return wait_for(found, timeout=timeout, what="%s event for %s" % (etype, msgid))[0]


def recipient_state(r, msgid):
    return r.ctl("queue", "show", msgid)["recipients"][0]


def all_logs(r):
    out = ""
    for name in os.listdir(os.path.join(r.var, "log")):
        with open(os.path.join(r.var, "log", name), errors="replace") as f:
            out += f.read()
    return out


def b64(s):
    return base64.b64encode(s.encode()).decode()


def smtps_route(port, password=ROUTE_PASSWORD):
    return ('{ name = "smarthost"; endpoints = [ "smtps://%s:%d" ]; tls = "required";\n'
            '      auth_username = "%s"; auth_password = "%s"; }'
            % (HOST_NAME, port, ROUTE_USER, password))


# ---- implicit TLS and AUTH LOGIN ----

def test_smtps_endpoint_auth_login_delivers_exact_message(make_relay, dns, ca, hosts):
    host = hosts(ROUTE_USER, ROUTE_PASSWORD, tls_ctx=tls_server_ctx(ca))
    r = start_relay(make_relay, config(
        lambda p: smtps_route(host.port),
        '  resolver = "%s";\n  tls_ca_file = "%s";\n' % (dns.address, ca.cert)))
    msgid = submit(r)

    wait_for(lambda: host.messages, timeout=30, what="the message at the smart host")
    mail_from, rcpts, data = host.messages[0]
    assert mail_from == "app@example.test"
    assert rcpts == ["someone@example.org"]
    assert relay_headers_removed(data) == MESSAGE

    sess = [s for s in host.sessions if s["auth"] == "ok"][0]
    # TLS first: the client's first byte is a TLS handshake record, before any greeting
    assert sess["first"] == b"\x16", sess
    assert sess["tls"] and sess["tls"].startswith("TLSv1."), sess
    assert sess["user"] == ROUTE_USER
    verbs = [line.split(b" ", 1)[0].rstrip(b"\r\n").upper() for line in sess["lines"]]
    assert verbs[:2] == [b"EHLO", b"AUTH"], verbs
    assert sess["lines"][1] == b"AUTH LOGIN\r\n"
    assert sess["lines"][2] == b64(ROUTE_USER).encode() + b"\r\n"
    assert b"STARTTLS" not in verbs

    delivered = wait_event(r, msgid, "delivered")
    attrs = delivered["attrs"]
    assert delivered["remote_host"] == HOST_NAME
    assert attrs["route"] == "smarthost"
    assert attrs["endpoint"] == "%s:%d" % (HOST_NAME, host.port)
    assert attrs["tls_version"].startswith("TLSv1."), attrs
    assert attrs["tls_cipher"]
    assert attrs["tls_verified"] == "true" and attrs["tls_policy"] == "required", attrs
    assert recipient_state(r, msgid)["state"] == "delivered"
    assert dns.asked(HOST_NAME) >= 1

    logs = all_logs(r)
    assert "event=smtp_send" in logs  # debug lines are on: the check below means something
    assert ROUTE_PASSWORD not in logs and b64(ROUTE_PASSWORD) not in logs


def test_smtps_wrong_password_deferred_with_reply(make_relay, dns, ca, hosts):
    host = hosts(ROUTE_USER, ROUTE_PASSWORD, tls_ctx=tls_server_ctx(ca))
    wrong = "not-the-relay-pass"
    r = start_relay(make_relay, config(
        lambda p: smtps_route(host.port, password=wrong),
        '  resolver = "%s";\n  tls_ca_file = "%s";\n' % (dns.address, ca.cert)))
    msgid = submit(r)

    ev = wait_event(r, msgid, "deferred", service="delivery")
    assert ev["reply"]["code"] == 451 and ev["reply"]["enhanced"] == "4.7.0", ev
    text = ev["reply"]["text"]
    assert HOST_NAME in text and "535" in text, text
    assert "Authentication credentials invalid" in text, text
    assert ev["attrs"]["reason"] in ("config", "policy"), ev["attrs"]

    rc = recipient_state(r, msgid)
    assert rc["state"] == "deferred", rc
    assert rc["last_reply"]["code"] == 451 and rc["last_reply"]["enhanced"] == "4.7.0", rc
    assert "Authentication credentials invalid" in rc["last_reply"]["text"], rc

    assert host.messages == []
    sess = [s for s in host.sessions if s["auth"]][0]
    assert sess["first"] == b"\x16" and sess["auth"] == "refused" and sess["user"] == ROUTE_USER
    assert not [line for line in sess["lines"] if line.upper().startswith(b"MAIL")]
    logs = all_logs(r)
    assert "event=auth_failed" in logs
    assert wrong not in logs and b64(wrong) not in logs


def test_credentials_never_sent_without_tls(make_relay, dns, hosts):
    # plaintext, AUTH LOGIN offered, no STARTTLS: an opportunistic route with credentials
    host = hosts(ROUTE_USER, ROUTE_PASSWORD, tls_ctx=None)
    r = start_relay(make_relay, config(
        lambda p: '{ name = "plain"; endpoints = [ "smtp://%s:%d" ]; tls = "opportunistic";\n'
                  '      auth_username = "%s"; auth_password = "%s"; }'
                  % (HOST_NAME, host.port, ROUTE_USER, ROUTE_PASSWORD),
        '  resolver = "%s";\n' % dns.address))
    msgid = submit(r)

    ev = wait_event(r, msgid, "deferred", service="delivery")
    assert ev["reply"]["code"] == 451 and ev["reply"]["enhanced"] == "4.7.0", ev
    assert "credentials are never sent in plaintext" in ev["reply"]["text"], ev
    assert HOST_NAME in ev["reply"]["text"]
    rc = recipient_state(r, msgid)
    assert rc["state"] == "deferred" and rc["last_reply"]["enhanced"] == "4.7.0", rc

    lines = host.all_lines()
    assert [line for line in lines if line.upper().startswith(b"EHLO")], lines  # it got there
    assert not [line for line in lines if line.upper().startswith((b"AUTH", b"MAIL"))], lines
    raw = b"".join(lines)
    for secret in (ROUTE_USER, ROUTE_PASSWORD):
        assert secret.encode() not in raw and b64(secret).encode() not in raw
    assert host.messages == []


# ---- routing by stream ----

def test_stream_routes_alerts_to_sandbox_and_the_rest_to_default(make_relay):
    dead = closed_port()
    r = start_relay(make_relay, config(
        lambda p: '{ name = "alerts"; match = { streams = [ "alerts" ]; };\n'
                  '      endpoints = [ "127.0.0.1:%d" ]; },\n'
                  '    { name = "default"; endpoints = [ "127.0.0.1:%d" ]; tls = "none"; }'
                  % (p, dead)))
    alert = b"X-Sendarix-Stream: alerts\r\n" + MESSAGE.replace(b"smarthost-1@", b"alert-1@")
    alert_id = submit(r, alert, rcpt="oncall@example.org")
    other_id = submit(r, MESSAGE, rcpt="someone@example.org")

    files = r.wait_maildir(1)
    assert len(files) == 1
    data = files[0][1]
    assert b"\r\nDelivered-To: oncall@example.org\r\n" in data
    assert b"Message-ID: <alert-1@example.test>" in data
    ev = wait_event(r, alert_id, "delivered")
    assert ev["attrs"]["route"] == "alerts", ev

    ev = wait_event(r, other_id, "deferred", service="delivery")
    assert ev["attrs"]["route"] == "default", ev
    rc = recipient_state(r, other_id)
    assert rc["state"] == "deferred", rc
    assert rc["last_reply"]["code"] == 451 and rc["last_reply"]["enhanced"].startswith("4.4."), rc
    assert "connection to 127.0.0.1" in rc["last_reply"]["text"], rc
    assert "refused" in rc["last_reply"]["text"].lower(), rc
    shown = r.ctl_run("queue", "show", other_id, json_out=False)
    assert "deferred" in shown.stdout and "connection to 127.0.0.1" in shown.stdout, shown.stdout
    assert len(r.maildir_files()) == 1


# ---- refusals at router start ----

@pytest.mark.parametrize("routes,needle", [
    (lambda p: '{ name = "a"; endpoints = [ "smtp+tls://127.0.0.1:%d" ]; }' % p,
     'unknown scheme "smtp+tls"'),
    (lambda p: '{ name = "a"; endpoints = [ "submission://127.0.0.1:%d" ]; }' % p,
     'unknown scheme "submission"'),
    (lambda p: '{ name = "a"; endpoints = [ "smtps://127.0.0.1:%d" ]; tls = "none"; }' % p,
     "smtps:// endpoint"),
])
def test_router_refuses_bad_schemes(make_relay, routes, needle):
    r = make_relay(config_edit=config(routes))
    p = r.spawn("router")
    assert p.wait(timeout=10) == 1
    log = r.log("router")
    assert needle in log and "sendarix.conf:" in log and "routes[1]" in log, log
