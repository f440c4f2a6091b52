"""The relay end to end: real clients submit over STARTTLS + AUTH, the
message crosses ingress, auth, queue, router and delivery as separate
processes and must arrive in the sandbox Maildir byte for byte, with its
events searchable by id."""
import re
import smtplib
import ssl
import subprocess
import time

import pytest

from harness import wait_for

USER, PASSWORD = "demo", "demo-password"

MESSAGE = (b"From: App <app@example.test>\r\n"
           b"To: Someone <someone@example.org>\r\n"
           b"Subject: byte-exact check\r\n"
           b"Message-ID: <m1@example.test>\r\n"
           b"\r\n"
           b"first line\r\n"
           b".a line that starts with a dot\r\n"
           b"..two dots\r\n"
           b".\tdot and tab\r\n"
           b"\r\n"
           b"last line\r\n")


@pytest.fixture
def relay(make_relay):
    r = make_relay(retry_base="2s")
    r.start()
    r.add_demo_credential()
    return r


def tls_context(r):
    ctx = ssl.create_default_context(cafile=r.cert)
    ctx.check_hostname = False
    return ctx


def queued_id(reply_text):
    m = re.search(r"queued as ([0-9a-v]{20})", reply_text)
    assert m, "no queue id in %r" % reply_text
    return m.group(1)


def split_maildir_file(data):
    """(return_path, delivered_to, received_block, rest) of a sandbox file."""
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: <"), data[:200]
    assert lines[1].startswith(b"Delivered-To: "), data[:200]
    i = 2
    # example.test has DKIM keys: the relay's signatures come first (test_dkim.py checks them)
    assert lines[i].startswith(b"DKIM-Signature: v=1; a=rsa-sha256;"), data[:400]
    while lines[i].startswith(b"DKIM-Signature:") or lines[i].startswith(b"\t"):
        i += 1
    assert lines[i].startswith(b"Received: from "), data[:400]
    i += 1
    while lines[i].startswith(b"\t"):
        i += 1
    received = b"\r\n".join(lines[2:i])
    rest = b"\r\n".join(lines[i:])
    return lines[0], lines[1], received, rest


def events_for(r, msgid):
    return r.ctl("log", "search", "--id", msgid)["events"]


def wait_events(r, msgid, types, timeout=20):
    def have():
        events = events_for(r, msgid)
        got = [e["type"] for e in events]
        return all(t in got for t in types) and events
    return wait_for(have, timeout=timeout, what="events %s for %s" % (types, msgid))


def test_smtplib_starttls_auth_arrives_byte_exact(relay):
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.ehlo("client.example")
        s.starttls(context=tls_context(relay))
        s.ehlo("client.example")
        s.login(USER, PASSWORD)
        s.mail("app@example.test")
        s.rcpt("someone@example.org")
        code, text = s.data(MESSAGE)
    assert code == 250
    text = text.decode()
    assert text.startswith("2.0.0 OK: queued as ")
    msgid = queued_id(text)

    files = relay.wait_maildir(1)
    assert len(files) == 1
    rp, dt, received, rest = split_maildir_file(files[0][1])
    assert rp == b"Return-Path: <app@example.test>"
    assert dt == b"Delivered-To: someone@example.org"
    assert b"with ESMTPSA id " + msgid.encode() in received
    assert rest == MESSAGE

    events = wait_events(relay, msgid, ["accepted", "queued", "delivered"])
    types = [e["type"] for e in events]
    assert types.index("accepted") < types.index("delivered") or \
        types.index("queued") < types.index("delivered")
    delivered = [e for e in events if e["type"] == "delivered"][0]
    assert delivered["recipient"] == "someone@example.org"
    assert delivered["reply"]["code"] == 250
    assert all(e["message_id"] == msgid for e in events)

    shown = relay.ctl("queue", "show", msgid)
    assert shown["message"]["message_id"] == msgid
    assert shown["recipients"][0]["state"] == "delivered"


def test_swaks_starttls_auth_plain(relay, tmp_path):
    eml = tmp_path / "m.eml"
    # swaks ends the text with CRLF "." CRLF itself: give it the message
    # without its last line end, so what crosses the wire is MESSAGE exactly
    eml.write_bytes(MESSAGE.replace(b"\r\n", b"\n")[:-1])
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % relay.submission, "-tls",
         "--tls-verify", "--tls-ca-path", relay.cert,
         "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD,
         "--from", "app@example.test", "--to", "someone@example.org",
         "--data", str(eml), "--helo", "client.example"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Authentication successful" in out.stdout
    msgid = queued_id(out.stdout)
    files = relay.wait_maildir(1)
    _, _, received, rest = split_maildir_file(files[0][1])
    assert rest == MESSAGE
    assert msgid.encode() in received
    wait_events(relay, msgid, ["accepted", "delivered"])


def test_deferred_on_421_then_delivered_on_retry(relay):
    relay.ctl("sandbox", "fail", "--code", "421", "--seconds", "3")
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.starttls(context=tls_context(relay))
        s.login(USER, PASSWORD)
        s.mail("app@example.test")
        s.rcpt("retry@example.org")
        code, text = s.data(b"Subject: retry\r\n\r\nbody\r\n")
    assert code == 250
    msgid = queued_id(text.decode())
    events = wait_events(relay, msgid, ["deferred"], timeout=15)
    deferred = [e for e in events if e["type"] == "deferred"][0]
    assert deferred["reply"]["code"] == 421
    assert relay.maildir_files() == []
    events = wait_events(relay, msgid, ["delivered"], timeout=30)
    types = [e["type"] for e in events]
    assert types.index("deferred") < types.index("delivered")
    assert len(relay.maildir_files()) == 1
    shown = relay.ctl("queue", "show", msgid)
    assert shown["recipients"][0]["attempts"] >= 2


def test_wrong_password_gets_535(relay):
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.starttls(context=tls_context(relay))
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(USER, "not-the-password")
        assert e.value.smtp_code == 535
        assert e.value.smtp_error.startswith(b"5.7.8")
        code, _ = s.mail("app@example.test")
        assert code == 530


def test_auth_before_starttls_gets_530(relay):
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.ehlo()
        assert not s.has_extn("auth"), "AUTH must not be offered before TLS"
        code, text = s.docmd("AUTH", "PLAIN AGRlbW8AZGVtby1wYXNzd29yZA==")
        assert code == 530 and text.startswith(b"5.7.0")


def test_no_message_accepted_without_auth_on_submission(relay):
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.ehlo()
        code, text = s.mail("app@example.test")
        assert code == 530 and text.startswith(b"5.7.0")
        s.starttls(context=tls_context(relay))
        s.ehlo()
        code, text = s.mail("app@example.test")
        assert code == 530 and text.startswith(b"5.7.0")
        code, _ = s.rcpt("someone@example.org")
        assert code == 503
        code, _ = s.docmd("DATA")
        assert code == 503
    time.sleep(1)
    assert relay.maildir_files() == []
