"""Ingress limits and policy against the running relay: the From: header
policy, the size of the header block, connections per client address,
commands without a message, AUTH failures in a session, and the legacy
role's allowlist."""
import smtplib
import socket
import ssl
import time

import pytest

USER, PASSWORD = "demo", "demo-password"


def tls_context(r):
    ctx = ssl.create_default_context(cafile=r.cert)
    ctx.check_hostname = False
    return ctx


def edit_ingress(extra):
    """config_edit that adds settings to the ingress section."""
    def edit(text):
        return text.replace("ingress = {\n", "ingress = {\n" + extra + "\n", 1)
    return edit


@pytest.fixture
def relay(make_relay):
    r = make_relay(config_edit=edit_ingress(
        "  max_header_size = \"4K\";\n  max_connections_per_ip = 5;\n"
        "  max_junk_commands = 10;\n  max_auth_failures = 2;"))
    r.start()
    r.add_demo_credential()
    return r


def login(r):
    s = smtplib.SMTP("127.0.0.1", r.submission, timeout=10)
    s.starttls(context=tls_context(r))
    s.login(USER, PASSWORD)
    return s


def send(s, frm, body):
    s.mail(frm)
    s.rcpt("someone@example.org")
    return s.data(body)


def test_from_header_must_be_a_sending_domain(relay):
    with login(relay) as s:
        code, text = send(s, "app@example.test",
                          b"From: Boss <boss@elsewhere.example>\r\nSubject: x\r\n\r\nhi\r\n")
        assert code == 553 and text.startswith(b"5.7.1")
        assert b"boss@elsewhere.example" in text
        code, _ = send(s, "app@example.test",
                       b"From: \"App, Inc\" <app@EXAMPLE.test>\r\nSubject: x\r\n\r\nhi\r\n")
        assert code == 250
        code, text = send(s, "app@example.test",
                          b"From: a@example.test\r\nFrom: b@example.test\r\n\r\nhi\r\n")
        assert code == 550


def test_mail_from_must_be_a_sending_domain(relay):
    with login(relay) as s:
        code, text = s.mail("app@other.example")
        assert code == 553 and text.startswith(b"5.7.1")


def test_header_block_size_limit(relay):
    with login(relay) as s:
        big = b"X-Filler: " + b"a" * 900 + b"\r\n"
        code, text = send(s, "app@example.test",
                          b"From: app@example.test\r\n" + big * 6 + b"\r\nbody\r\n")
        assert code == 552 and text.startswith(b"5.3.4")
        # the same bytes in the body are fine
        code, _ = send(s, "app@example.test",
                       b"From: app@example.test\r\n\r\n" + big * 6)
        assert code == 250


def send_split(s, frm, text, at):
    """DATA with the text in two writes, split at `at`, a pause between them."""
    s.mail(frm)
    s.rcpt("someone@example.org")
    code, _ = s.docmd("DATA")
    assert code == 354
    s.sock.sendall(text[:at])
    time.sleep(0.05)
    s.sock.sendall(text[at:] + b".\r\n")
    return s.getreply()


def test_header_block_found_however_the_text_arrives(relay):
    # a large body after the header arrives in one read; the header block's
    # end may also be split between reads, anywhere in its blank line
    body = b"".join(b"%05d %s\r\n" % (i, b"b" * 70) for i in range(3000)) + b"\r\n\r\nend\r\n"
    for frm, want in ((b"Boss <boss@elsewhere.example>", 553), (b"app@example.test", 250)):
        head = b"From: " + frm + b"\r\nSubject: split\r\n"
        with login(relay) as s:
            for at in range(len(head) - 1, len(head) + 3):
                code, _ = send_split(s, "app@example.test", head + b"\r\n" + body, at)
                assert code == want, (frm, at)
    # the limit holds to the octet, with the body in the same read as the header:
    # 4K of header lines, then the blank line
    for pad, want in ((0, 250), (1, 552)):
        head = b"From: app@example.test\r\n" + (b"X-Filler: " + b"a" * 88 + b"\r\n") * 40
        last = 4096 + pad - len(head)
        head += b"X-Last: " + b"z" * (last - 10) + b"\r\n"
        assert len(head) == 4096 + pad
        with login(relay) as s:
            code, _ = send_split(s, "app@example.test", head + b"\r\n" + body, 0)
            assert code == want, pad


def test_connections_per_ip(relay):
    socks = []
    try:
        for _ in range(5):
            c = socket.create_connection(("127.0.0.1", relay.submission))
            assert c.recv(512).startswith(b"220")
            socks.append(c)
        c = socket.create_connection(("127.0.0.1", relay.submission))
        socks.append(c)
        assert c.recv(512).startswith(b"421 4.7.0")
    finally:
        for c in socks:
            c.close()
    time.sleep(0.3)
    c = socket.create_connection(("127.0.0.1", relay.submission))
    assert c.recv(512).startswith(b"220")
    c.close()


def test_commands_without_a_message_are_limited(relay):
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.ehlo()
        for _ in range(9):
            code, _ = s.noop()
            assert code == 250
        with pytest.raises(smtplib.SMTPServerDisconnected):
            for _ in range(3):
                code, text = s.noop()
                if code == 421:
                    assert text.startswith(b"4.7.0")
                    s.noop()


def test_auth_failures_end_the_session(relay):
    s = smtplib.SMTP("127.0.0.1", relay.submission, timeout=10)
    s.starttls(context=tls_context(relay))
    s.ehlo()
    code, _ = s.docmd("AUTH", "PLAIN AGRlbW8Ad3Jvbmc=")   # demo / wrong
    assert code == 535
    code, text = s.docmd("AUTH", "PLAIN AGRlbW8Ad3Jvbmc=")
    assert code == 535
    # the second failure is followed by 421 and the end of the session
    line = s.getreply()
    assert line[0] == 421
    s.close()


def test_malformed_base64_gets_501(relay):
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.starttls(context=tls_context(relay))
        s.ehlo()
        code, text = s.docmd("AUTH", "PLAIN not*base64")
        assert code == 501 and text.startswith(b"5.5.2")


def test_ehlo_advertises_the_extensions(relay):
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=10) as s:
        s.ehlo()
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                    "chunking", "dsn", "starttls"):
            assert s.has_extn(ext), ext
        assert s.esmtp_features["size"] == "52428800"
        assert not s.has_extn("auth")
        s.starttls(context=tls_context(relay))
        s.ehlo()
        assert not s.has_extn("starttls")
        assert set(s.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN", "XOAUTH2"}


def test_legacy_port_relays_for_allowlisted_networks_only(make_relay):
    r = make_relay(config_edit=lambda t: t.replace(
        'legacy_networks = [ "127.0.0.0/8", "::1/128" ];',
        'legacy_networks = [ "127.0.0.2/32" ];'))
    r.start()
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", r.legacy, timeout=10)
    assert e.value.smtp_code == 554
    with smtplib.SMTP("127.0.0.1", r.legacy, timeout=10,
                      source_address=("127.0.0.2", 0)) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        code, _ = s.mail("device@example.test")
        assert code == 250
        code, _ = s.rcpt("ops@example.org")
        assert code == 250
        code, _ = s.data(b"Subject: printer\r\n\r\ntoner low\r\n")
        assert code == 250
    r.wait_maildir(1)
