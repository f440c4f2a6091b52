"""Real SMTP clients against the relay: swaks, Python's smtplib, curl,
openssl s_client and nodemailer (XOAUTH2 with a JWT), each message checked
byte for byte where it arrives in the sandbox. Also: the TLS versions and
ciphers the relay agrees to, a certificate replaced under SIGHUP without
dropping a session, and several ingress processes sharing one port."""
import base64
import email.generator
import email.policy
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from email.message import EmailMessage

import pytest

from dialog import (DEMO_PASSWORD, DEMO_USER, HOSTNAME, add_demo_login, config_editor,
                    split_trace)
from harness import E2E_DIR, Relay, wait_for

CLIENTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients")

MESSAGE = (b"From: App <app@example.test>\r\n"
           b"To: Someone <someone@example.org>\r\n"
           b"Subject: client check\r\n"
           b"Message-ID: <client-check@example.test>\r\n"
           b"\r\n"
           b"first line\r\n"
           b".a line that starts with a dot\r\n"
           b"..two dots\r\n"
           b".\r\n"
           b"\r\n"
           b"last line\r\n")

ISSUER, AUDIENCE = "https://id.sendarix.test", "sendarix"
JWT_SECRET = "sendarix-e2e-hs256-secret-0123456789abcdef"   # 42 bytes
OAUTH_CONFIG = [("auth", "oauth_issuers",
                 '( { issuer = "%s"; audience = "%s"; algorithm = "HS256"; secret = "%s"; } )'
                 % (ISSUER, AUDIENCE, JWT_SECRET)),
                # refused tokens here are the point, not lockouts (they have their dialog)
                ("auth", "lockout_failures", "0")]


def start_relay(name, settings=None):
    r = Relay(name, config_edit=config_editor(settings) if settings else None)
    try:
        r.start()
        add_demo_login(r)
    except BaseException:
        r.cleanup()
        raise
    return r


@pytest.fixture(scope="module")
def relay():
    r = start_relay("clients")
    yield r
    r.cleanup()


@pytest.fixture
def fresh_relay():
    made = []

    def make(name, settings=None, **kw):
        r = start_relay(name, settings, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.cleanup()


def queued_id(text):
    m = re.search(r"queued as ([0-9a-v]{20})", text)
    assert m, "no queue id in %r" % text
    return m.group(1)


def stored(r, msgid, timeout=20):
    """The message as the sandbox stored it, without its trace lines."""
    tag = (" id %s" % msgid).encode()

    def find():
        return [d for _, d in r.maildir_files() if tag in d[:4096]]
    files = wait_for(find, timeout=timeout, what="message %s in the sandbox" % msgid)
    return files[0]


def tls_context(r):
    ctx = ssl.create_default_context(cafile=r.cert)
    ctx.check_hostname = False
    return ctx


def write_eml(tmp_path, data, name="m.eml"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# ---- swaks ----

def swaks(r, *args, data=MESSAGE, tmp_path=None):
    # swaks ends the text with CRLF "." CRLF itself: give it the message without
    # its last line end (and with LF: it writes CRLF), so the wire carries MESSAGE
    eml = write_eml(tmp_path, data.replace(b"\r\n", b"\n")[:-1])
    cmd = ["swaks", "--from", "app@example.test", "--to", "someone@example.org",
           "--helo", "client.example", "--data", eml, "--tls-ca-path", r.cert,
           "--auth-user", DEMO_USER, "--auth-password", DEMO_PASSWORD] + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_swaks_starttls_auth_plain(relay, tmp_path):
    out = swaks(relay, "--server", "127.0.0.1:%d" % relay.submission, "-tls", "--tls-verify",
                "--auth", "PLAIN", tmp_path=tmp_path)
    assert "<-  220 2.0.0 Ready to start TLS" in out
    assert "~> AUTH PLAIN" in out and "<~  235 2.7.0" in out
    assert split_trace(stored(relay, queued_id(out))) == MESSAGE


def test_swaks_implicit_tls_auth_login(relay, tmp_path):
    out = swaks(relay, "--server", "127.0.0.1:%d" % relay.smtps, "--tlsc", "--tls-verify",
                "--auth", "LOGIN", tmp_path=tmp_path)
    assert "~> AUTH LOGIN" in out
    assert "<~  334 VXNlcm5hbWU6" in out and "<~  334 UGFzc3dvcmQ6" in out
    assert "<~  235 2.7.0" in out
    assert "STARTTLS" not in out
    assert split_trace(stored(relay, queued_id(out))) == MESSAGE


def test_swaks_pipelining(relay, tmp_path):
    out = swaks(relay, "--server", "127.0.0.1:%d" % relay.submission, "-tls", "--auth", "PLAIN",
                "--pipeline", "--to", "pipe-a@example.org,pipe-b@example.org",
                tmp_path=tmp_path)
    # swaks sends MAIL, both RCPTs and DATA in one go, then reads the replies in order
    sent = out.index("~> MAIL FROM:<app@example.test>")
    first_reply = out.index("<~  250 2.1.0")
    assert out.index("~> RCPT TO:<pipe-b@example.org>") < first_reply
    assert out.index("~> DATA") < first_reply and sent < first_reply
    assert out.count("<~  250 2.1.5") == 2
    msgid = queued_id(out)
    assert split_trace(stored(relay, msgid)) == MESSAGE
    shown = relay.ctl("queue", "show", msgid)
    assert [x["address"] for x in shown["recipients"]] == ["pipe-a@example.org",
                                                           "pipe-b@example.org"]


def test_bdat_client(relay):
    """swaks here has no CHUNKING: a minimal BDAT client over implicit TLS."""
    chunks = [MESSAGE[:7], MESSAGE[7:60], b"", MESSAGE[60:]]
    with socket.create_connection(("127.0.0.1", relay.smtps), timeout=10) as raw:
        s = tls_context(relay).wrap_socket(raw, server_hostname=HOSTNAME)
        f = s.makefile("rb")

        def reply():
            lines = []
            while True:
                ln = f.readline().decode()
                lines.append(ln.rstrip("\r\n"))
                if ln[3:4] != "-":
                    return lines
        assert reply()[0].startswith("220 ")
        s.sendall(b"EHLO client.example\r\n")
        assert "250 CHUNKING" in reply()
        cred = base64.b64encode(b"\0demo\0demo-password").decode()
        s.sendall(("AUTH PLAIN %s\r\n" % cred).encode())
        assert reply()[0].startswith("235 2.7.0")
        s.sendall(b"MAIL FROM:<app@example.test>\r\nRCPT TO:<bdat@example.org>\r\n")
        assert reply()[0].startswith("250 2.1.0")
        assert reply()[0].startswith("250 2.1.5")
        total = 0
        for i, c in enumerate(chunks):
            last = i == len(chunks) - 1
            s.sendall(b"BDAT %d%s\r\n" % (len(c), b" LAST" if last else b"") + c)
            total += len(c)
            line = reply()[0]
            if not last:
                assert line == "250 2.0.0 %d octets received" % total
        assert line.startswith("250 2.0.0 OK: queued as ")
        s.sendall(b"QUIT\r\n")
        assert reply()[0].startswith("221 2.0.0")
    assert split_trace(stored(relay, queued_id(line))) == MESSAGE


# ---- Python's smtplib ----

def test_smtplib_smtputf8_and_8bit_body(relay):
    msg = EmailMessage()
    msg["From"] = "Jörg <jörg@example.test>"
    msg["To"] = "用户 <用户@example.org>"
    msg["Subject"] = "grüße, 8-bit body"
    msg.set_content("Grüße aus Köln: café, naïve, €, 📧\n.leading dot\n", cte="8bit")
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.ehlo("client.example")
        s.starttls(context=tls_context(relay))
        s.ehlo("client.example")
        assert s.has_extn("smtputf8") and s.has_extn("8bitmime")
        s.login(DEMO_USER, DEMO_PASSWORD)
        refused = s.send_message(msg)
        assert refused == {}
        code, text = s.noop()
    # what smtplib put on the wire, as smtplib flattens it for SMTPUTF8
    with io.BytesIO() as b:
        email.generator.BytesGenerator(b, policy=msg.policy.clone(utf8=True)).flatten(
            msg, linesep="\r\n")
        expected = b.getvalue()
    assert "€".encode() in expected and b"8bit" in expected
    tag = "Delivered-To: 用户@example.org".encode()
    files = wait_for(lambda: [d for _, d in relay.maildir_files() if tag in d[:300]],
                     what="the SMTPUTF8 message in the sandbox")
    data = files[0]
    assert data.startswith("Return-Path: <jörg@example.test>\r\n".encode())
    assert split_trace(data) == expected


def test_smtplib_auth_login_on_smtps(relay):
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps, timeout=10,
                          context=tls_context(relay)) as s:
        s.ehlo("client.example")
        s.user, s.password = DEMO_USER, DEMO_PASSWORD
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235
        s.mail("app@example.test")
        s.rcpt("smtplib-login@example.org")
        code, text = s.data(MESSAGE)
    assert code == 250
    assert split_trace(stored(relay, queued_id(text.decode()))) == MESSAGE


# ---- curl ----

def curl(r, url, tmp_path, *extra):
    eml = write_eml(tmp_path, MESSAGE)
    out = subprocess.run(["curl", "-sS", "-v", "--cacert", r.cert, url,
                          "--user", "%s:%s" % (DEMO_USER, DEMO_PASSWORD),
                          "--mail-from", "app@example.test", "--mail-rcpt", "curl@example.org",
                          "--upload-file", eml] + list(extra),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_curl_smtp_starttls_required(relay, tmp_path):
    err = curl(relay, "smtp://127.0.0.1:%d" % relay.submission, tmp_path, "--ssl-reqd")
    assert "> STARTTLS" in err
    assert re.search(r"> AUTH (PLAIN|LOGIN)", err)
    assert "< 235 2.7.0" in err
    assert split_trace(stored(relay, queued_id(err))) == MESSAGE


def test_curl_smtps(relay, tmp_path):
    err = curl(relay, "smtps://127.0.0.1:%d" % relay.smtps, tmp_path)
    assert "STARTTLS" not in err
    assert "< 235 2.7.0" in err
    assert split_trace(stored(relay, queued_id(err))) == MESSAGE


# ---- openssl s_client ----

AUTH_PLAIN = base64.b64encode(b"\0demo\0demo-password")


def s_client(r, *args, data=b"QUIT\r\n", timeout=20):
    cmd = ["openssl", "s_client", "-brief", "-ign_eof", "-CAfile", r.cert,
           "-verify_hostname", HOSTNAME, "-verify_return_error"] + list(args)
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)


def transaction(rcpt):
    return (b"EHLO client.example\r\nAUTH PLAIN " + AUTH_PLAIN + b"\r\n"
            b"MAIL FROM:<app@example.test>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n" +
            MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n")


def negotiated(out):
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    proto = re.search(r"Protocol version: (\S+)", text)
    cipher = re.search(r"Ciphersuite: (\S+)", text)
    return (proto.group(1) if proto else None, cipher.group(1) if cipher else None, text)


AEAD = re.compile(r"(GCM|CHACHA20[-_]POLY1305|CCM)")


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_starttls_dialog(relay, version):
    out = s_client(relay, "-starttls", "smtp", "-connect", "127.0.0.1:%d" % relay.submission,
                   version, data=transaction(b"openssl-starttls@example.org"))
    proto, cipher, text = negotiated(out)
    assert out.returncode == 0, text
    assert proto == {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[version], text
    assert AEAD.search(cipher), "cipher %s is not AEAD" % cipher
    assert "Verification: OK" in text
    assert "235 2.7.0" in text and "221 2.0.0" in text
    assert split_trace(stored(relay, queued_id(text))) == MESSAGE


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_implicit_tls_dialog(relay, version):
    out = s_client(relay, "-connect", "127.0.0.1:%d" % relay.smtps, version,
                   data=transaction(b"openssl-smtps@example.org"))
    proto, cipher, text = negotiated(out)
    assert out.returncode == 0, text
    assert proto == {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[version], text
    assert AEAD.search(cipher), "cipher %s is not AEAD" % cipher
    assert re.search(r"^220 %s ESMTP" % re.escape(HOSTNAME), text, re.M)
    assert split_trace(stored(relay, queued_id(text))) == MESSAGE


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_session_resumed(relay, version, tmp_path):
    # the second connection resumes the first one's session (a TLS 1.3
    # ticket, a TLS 1.2 session id): no full handshake for a client that keeps it
    sess = str(tmp_path / "session.pem")
    target = ["-starttls", "smtp", "-connect", "127.0.0.1:%d" % relay.submission, version]
    texts = []
    for keep in (["-sess_out", sess], ["-sess_in", sess]):
        cmd = ["openssl", "s_client", "-ign_eof", "-CAfile", relay.cert] + target + keep
        out = subprocess.run(cmd, input=b"EHLO client.example\r\nQUIT\r\n",
                             capture_output=True, timeout=20)
        text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
        assert out.returncode == 0 and "221 2.0.0" in text, text
        texts.append(text)
    want = {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[version]
    assert re.search(r"^New, %s," % want, texts[0], re.M), texts[0]
    assert re.search(r"^Reused, %s," % want, texts[1], re.M), texts[1]


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_openssl_tls11_refused(relay, port):
    # SECLEVEL=0 lets this client offer TLS 1.1 at all; the refusal must be the server's
    starttls = ["-starttls", "smtp"] if port == "submission" else []
    target = ["-connect", "127.0.0.1:%d" % getattr(relay, port)]
    out = s_client(relay, *(starttls + target + ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]))
    proto, cipher, text = negotiated(out)
    assert out.returncode != 0, text
    assert proto is None and "CONNECTION ESTABLISHED" not in text
    assert re.search(r"alert protocol version|unsupported protocol|no protocols available",
                     text), text
    # the same client settings with TLS 1.2 connect: the client was able to try
    ok = s_client(relay, *(starttls + target + ["-tls1_2", "-cipher", "DEFAULT@SECLEVEL=0"]))
    assert ok.returncode == 0 and negotiated(ok)[0] == "TLSv1.2", negotiated(ok)[2]


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_openssl_non_aead_tls12_ciphers_refused(relay, port):
    starttls = ["-starttls", "smtp"] if port == "submission" else []
    out = s_client(relay, *(starttls + ["-connect", "127.0.0.1:%d" % getattr(relay, port),
                                        "-tls1_2", "-cipher",
                                        "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384:"
                                        "AES128-SHA256:AES256-SHA:@SECLEVEL=0"]))
    proto, cipher, text = negotiated(out)
    assert out.returncode != 0 and cipher is None, text
    assert "handshake failure" in text or "no shared cipher" in text, text


# ---- nodemailer with OAuth2 (XOAUTH2 and a JWT) ----

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, secret=JWT_SECRET, alg="HS256"):
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing = ("%s.%s" % (header, payload)).encode()
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest() if alg == "HS256" else b""
    return "%s.%s.%s" % (header, payload, b64url(sig))


def claims(**over):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE, "sub": DEMO_USER, "iat": now, "exp": now + 600}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


@pytest.fixture(scope="module")
def node_modules():
    """nodemailer installed into build/e2e/node_modules (npm, at test time)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (apt-get install nodejs npm)")
    os.makedirs(E2E_DIR, exist_ok=True)
    want = json.load(open(os.path.join(CLIENTS_DIR, "package.json")))
    have = os.path.join(E2E_DIR, "node_modules", "nodemailer", "package.json")
    version = want["dependencies"]["nodemailer"]
    if not (os.path.exists(have) and json.load(open(have)).get("version") == version):
        shutil.copy(os.path.join(CLIENTS_DIR, "package.json"),
                    os.path.join(E2E_DIR, "package.json"))
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=E2E_DIR, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.fail("npm install nodemailer failed:\n%s%s" % (r.stdout, r.stderr))
    return os.path.join(E2E_DIR, "node_modules")


@pytest.fixture(scope="module")
def oauth_relay():
    r = start_relay("oauth", OAUTH_CONFIG)
    yield r
    r.cleanup()


def nodemailer_send(r, node_modules, auth, port="submission", rcpt="node@example.org",
                    raw=MESSAGE):
    opts = {"host": "127.0.0.1", "port": getattr(r, port), "secure": port == "smtps",
            "ca": r.cert, "servername": HOSTNAME, "auth": auth, "from": "app@example.test",
            "to": [rcpt], "raw": base64.b64encode(raw).decode()}
    out = subprocess.run(["node", os.path.join(CLIENTS_DIR, "nodemailer_send.js")],
                         input=json.dumps(opts), capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, NODE_PATH=node_modules))
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_nodemailer_oauth2_jwt(oauth_relay, node_modules, port):
    token = make_jwt(claims())
    res = nodemailer_send(oauth_relay, node_modules,
                          {"type": "OAuth2", "user": DEMO_USER, "accessToken": token}, port=port)
    log = "\n".join(res["log"])
    assert res["ok"], json.dumps(res, indent=1)
    assert "AUTH XOAUTH2" in log
    assert re.search(r"server: 235 2\.7\.0", log), log
    assert split_trace(stored(oauth_relay, queued_id(res["response"]))) == MESSAGE
    shown = oauth_relay.ctl("queue", "show", queued_id(res["response"]))
    assert shown["message"]["username"] == DEMO_USER


def test_nodemailer_oauth2_expired_token(oauth_relay, node_modules):
    token = make_jwt(claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200))
    res = nodemailer_send(oauth_relay, node_modules,
                          {"type": "OAuth2", "user": DEMO_USER, "accessToken": token},
                          rcpt="node-expired@example.org")
    log = "\n".join(res["log"])
    assert not res["ok"]
    assert res["error"]["code"] == "EAUTH", res["error"]
    # RFC 7628 3.2.2: the error as a 334 challenge, the client's empty answer, then 535
    m = re.search(r"server: 334 (\S+)", log)
    assert m, log
    err = json.loads(base64.b64decode(m.group(1)))
    assert err["status"] in XOAUTH2_STATUS and err["schemes"] == "bearer", err
    assert re.search(r"server: 535 5\.7\.8", log), log
    assert "MAIL FROM" not in log


# ---- bearer tokens, raw: the RFC 7628 error exchange ----

def smtps_session(r):
    raw = socket.create_connection(("127.0.0.1", r.smtps), timeout=10)
    s = tls_context(r).wrap_socket(raw, server_hostname=HOSTNAME)
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            ln = f.readline().decode()
            if not ln:
                return lines or ["(closed)"]
            lines.append(ln.rstrip("\r\n"))
            if ln[3:4] != "-":
                return lines
    assert reply()[0].startswith("220 ")
    s.sendall(b"EHLO client.example\r\n")
    reply()
    return s, reply


def xoauth2(user, token):
    return base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode())


def oauthbearer(user, token):
    return base64.b64encode(("n,a=%s,\x01host=%s\x01port=465\x01auth=Bearer %s\x01\x01"
                             % (user, HOSTNAME, token)).encode())


XOAUTH2_STATUS = ("401", "invalid_token")

BAD_TOKENS = {
    "expired": lambda: make_jwt(claims(exp=int(time.time()) - 3600)),
    "wrong_audience": lambda: make_jwt(claims(aud="someone-else")),
    "wrong_issuer": lambda: make_jwt(claims(iss="https://evil.example")),
    "wrong_secret": lambda: make_jwt(claims(), secret="x" * 40),
    "alg_none": lambda: make_jwt(claims(), alg="none"),
    "other_user": lambda: make_jwt(claims(sub="someone-else")),
    "no_exp": lambda: make_jwt(claims(exp=None)),
}


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_bearer_token_good(oauth_relay, mech):
    build = xoauth2 if mech == "XOAUTH2" else oauthbearer
    s, reply = smtps_session(oauth_relay)
    with s:
        s.sendall(b"AUTH " + mech.encode() + b" " + build(DEMO_USER, make_jwt(claims())) + b"\r\n")
        assert reply()[0].startswith("235 2.7.0")
        s.sendall(b"MAIL FROM:<app@example.test>\r\n")
        assert reply()[0].startswith("250 2.1.0")


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bearer_token_refused_with_error_exchange(oauth_relay, mech, case):
    r = oauth_relay
    build = xoauth2 if mech == "XOAUTH2" else oauthbearer
    s, reply = smtps_session(r)
    with s:
        s.sendall(b"AUTH " + mech.encode() + b" " + build(DEMO_USER, BAD_TOKENS[case]()) +
                  b"\r\n")
        first = reply()[0]
        assert first.startswith("334 "), first
        err = json.loads(base64.b64decode(first[4:]))
        # RFC 7628 3.2.2 names an OAuth error code; XOAUTH2 clients know the HTTP-style "401"
        assert err["status"] in (XOAUTH2_STATUS if mech == "XOAUTH2" else ("invalid_token",)), err
        # the client answers the error challenge (OAUTHBEARER: a single ^A, XOAUTH2: empty)
        s.sendall(base64.b64encode(b"\x01") + b"\r\n" if mech == "OAUTHBEARER" else b"\r\n")
        final = reply()[0]
        assert final.startswith("535 5.7.8"), final
        s.sendall(b"MAIL FROM:<app@example.test>\r\n")
        assert reply()[0].startswith("530 5.7.0")


# ---- certificate rotation without downtime ----

def cert_fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(path):
    der = subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"],
                         capture_output=True, check=True).stdout
    return cert_fingerprint(der)


def peer_fingerprint(r, port, starttls):
    """The fingerprint of the certificate a new connection is shown."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if starttls:
            f = raw.makefile("rb")
            assert f.readline().startswith(b"220 ")
            raw.sendall(b"EHLO client.example\r\n")
            while f.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220 2.0.0")
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME) as s:
            return cert_fingerprint(s.getpeercert(binary_form=True))


def new_cert(dirname, cn=HOSTNAME):
    key, cert = os.path.join(dirname, "key.pem"), os.path.join(dirname, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % cn,
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def test_certificate_rotation_on_sighup(fresh_relay, tmp_path):
    r = fresh_relay("rotate")
    old = file_fingerprint(r.cert)
    assert peer_fingerprint(r, r.smtps, False) == old

    # a session that started with the old certificate, in the middle of a transaction
    s = smtplib.SMTP_SSL("127.0.0.1", r.smtps, timeout=10, context=tls_context(r))
    s.ehlo("client.example")
    s.login(DEMO_USER, DEMO_PASSWORD)
    assert cert_fingerprint(s.sock.getpeercert(binary_form=True)) == old
    s.mail("app@example.test")
    s.rcpt("rotation@example.org")

    # replace the pair in place (a rename each, as a deploy tool would), then SIGHUP
    cert, key = new_cert(str(tmp_path))
    tls_dir = os.path.dirname(r.cert)
    shutil.copy(key, os.path.join(tls_dir, "key.pem.new"))
    shutil.copy(cert, os.path.join(tls_dir, "cert.pem.new"))
    os.replace(os.path.join(tls_dir, "key.pem.new"), os.path.join(tls_dir, "key.pem"))
    os.replace(os.path.join(tls_dir, "cert.pem.new"), os.path.join(tls_dir, "cert.pem"))
    new = file_fingerprint(r.cert)
    assert new != old
    r.procs["ingress-1"].send_signal(signal.SIGHUP)
    wait_for(lambda: "event=tls_reloaded" in r.log("ingress-1"), what="the TLS reload")
    assert r.procs["ingress-1"].poll() is None

    # the old session goes on and completes its message
    code, text = s.data(MESSAGE)
    assert code == 250, text
    s.quit()
    assert split_trace(stored(r, queued_id(text.decode()))) == MESSAGE

    # new connections see the new certificate, on both TLS roles
    assert peer_fingerprint(r, r.smtps, False) == new
    assert peer_fingerprint(r, r.submission, True) == new
    with smtplib.SMTP_SSL("127.0.0.1", r.smtps, timeout=10,
                          context=ssl.create_default_context(cafile=cert)) as s2:
        s2.ehlo("client.example")
        s2.login(DEMO_USER, DEMO_PASSWORD)
        s2.mail("app@example.test")
        s2.rcpt("after-rotation@example.org")
        code, text = s2.data(MESSAGE)
    assert code == 250


def test_certificate_reload_failure_keeps_the_old_one(fresh_relay):
    r = fresh_relay("rotate-bad")
    old = file_fingerprint(r.cert)
    key = os.path.join(os.path.dirname(r.cert), "key.pem")
    with open(key, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    r.procs["ingress-1"].send_signal(signal.SIGHUP)
    wait_for(lambda: "event=tls_reload_failed" in r.log("ingress-1"), what="the failed reload")
    assert r.procs["ingress-1"].poll() is None
    assert peer_fingerprint(r, r.smtps, False) == old
    assert peer_fingerprint(r, r.submission, True) == old


# ---- several ingress processes on one port (SO_REUSEPORT) ----

def two_ingress(text):
    return re.sub(r'ingress = \[ "ipc://(.*)/run/ingress-1\.sock" \];',
                  lambda m: 'ingress = [ "ipc://%s/run/ingress-1.sock", "ipc://%s/run/ingress-2.sock" ];'
                  % (m.group(1), m.group(1)), text, count=1)


def listeners_on(port):
    out = subprocess.run(["ss", "-Htlnp", "sport = :%d" % port], capture_output=True,
                         text=True).stdout
    return sorted(set(int(p) for p in re.findall(r"pid=(\d+)", out))), out


def connects(r, key, role="submission"):
    return r.log(key).count("event=connect ip=127.0.0.1 role=%s" % role)


def test_two_ingress_processes_share_the_ports(make_relay):
    r = make_relay(config_edit=two_ingress)
    r.start(wait=False)
    p2 = r.spawn("ingress", instance=2)
    r.wait_up()   # sendarixctl status pings both ingress instances
    add_demo_login(r)
    wait_for(lambda: "event=listen role=smtps" in r.log("ingress-2"), what="ingress 2 listening")
    status = r.ctl("status")
    assert sum(1 for x in status["services"] if x["service"] == "ingress" and x["up"]) == 2, status
    p1 = r.procs["ingress-1"]
    assert p1.poll() is None and p2.poll() is None

    pids, out = listeners_on(r.submission)
    assert pids == sorted([p1.pid, p2.pid]), out

    # 40 connections to the one port are spread over both processes
    before = (connects(r, "ingress-1"), connects(r, "ingress-2"))
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", r.submission), timeout=10) as c:
            assert c.recv(512).startswith(b"220 ")
            c.sendall(b"QUIT\r\n")
            assert c.recv(512).startswith(b"221 ")
    wait_for(lambda: connects(r, "ingress-1") + connects(r, "ingress-2") - sum(before) >= 40,
             what="40 connect lines")
    got = (connects(r, "ingress-1") - before[0], connects(r, "ingress-2") - before[1])
    assert sum(got) == 40 and min(got) > 0, got

    # each process carries messages all the way: send until both have accepted one
    accepted = {1: 0, 2: 0}
    for i in range(40):
        with smtplib.SMTP_SSL("127.0.0.1", r.smtps, timeout=10, context=tls_context(r)) as s:
            s.login(DEMO_USER, DEMO_PASSWORD)
            s.mail("app@example.test")
            s.rcpt("spread-%d@example.org" % i)
            code, text = s.data(MESSAGE)
        assert code == 250
        msgid = queued_id(text.decode())
        inst = 1 if "msg=%s event=accepted" % msgid in r.log("ingress-1") else 2
        accepted[inst] += 1
        if accepted[1] and accepted[2]:
            break
    assert accepted[1] and accepted[2], accepted
    assert split_trace(stored(r, msgid)) == MESSAGE

    # one process gone: the port is still served, every new connection by the other
    r.kill("ingress", instance=2)
    pids, out = listeners_on(r.submission)
    assert pids == [p1.pid], out
    before1 = connects(r, "ingress-1")
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", r.submission), timeout=10) as c:
            assert c.recv(512).startswith(b"220 ")
    wait_for(lambda: connects(r, "ingress-1") - before1 >= 20, what="20 connects on ingress 1")
    with smtplib.SMTP("127.0.0.1", r.submission, timeout=10) as s:
        s.starttls(context=tls_context(r))
        s.login(DEMO_USER, DEMO_PASSWORD)
        s.mail("app@example.test")
        s.rcpt("after-kill@example.org")
        code, text = s.data(MESSAGE)
    assert code == 250
    assert split_trace(stored(r, queued_id(text.decode()))) == MESSAGE
