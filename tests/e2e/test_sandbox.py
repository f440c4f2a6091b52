"""End-to-end tests of the sandbox (sendarix-sandbox): the SMTP sink that is
the relay's local destination and the failover-drill target.

Only the sandbox runs: each test starts it from a private config and talks to
it with smtplib, raw sockets and, for the control socket, with ZeroMQ and the
bus schemas compiled from proto/ (and with sendarixctl when it knows the
command).
"""
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pytest

from harness import BIN, ROOT, wait_for

ENH = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


# ---- helpers ----

def start_sandbox(make_relay, config_edit=None):
    r = make_relay(config_edit=config_edit)
    r.spawn("sandbox")

    def up():
        p = r.procs["sandbox-1"]
        if p.poll() is not None:
            raise AssertionError("sandbox exited with %s:\n%s" % (p.returncode, r.log("sandbox")))
        try:
            socket.create_connection(("127.0.0.1", r.sandbox), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(up, timeout=15, what="sandbox port %d" % r.sandbox)
    return r


def sandbox_edit(**settings):
    """config_edit that sets keys inside the sandbox = { ... } group."""
    def edit(text):
        extra = "".join('  %s = %s;\n' % (k, v) for k, v in settings.items())
        return text.replace("sandbox = {\n", "sandbox = {\n" + extra, 1)
    return edit


class Client:
    """A raw SMTP client: bytes in, replies (code, lines) out."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("connection closed after %r" % lines)
            assert line.endswith(b"\r\n"), line
            lines.append(line[:-2])
            if len(line) < 4 or line[3:4] != b"-":
                break
        return int(lines[0][:3]), lines

    def cmd(self, data):
        self.send(data)
        return self.reply()

    def closed(self):
        """True when the server closed the connection (EOF with no more bytes)."""
        try:
            return self.f.read(1) == b""
        except (ConnectionResetError, socket.timeout):
            return False

    def starttls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def greet(port, name=b"client.test"):
    c = Client(port)
    code, lines = c.reply()
    assert code == 220, lines
    code, lines = c.cmd(b"EHLO " + name + b"\r\n")
    assert code == 250, lines
    return c


def expect(reply, code, enh):
    got, lines = reply
    assert got == code and lines[0][4:].startswith(enh.encode()), (code, enh, lines)
    assert ENH.match(lines[0]), lines


def stored_name(reply):
    code, lines = reply
    assert code == 250, lines
    m = re.match(rb"^250 2\.0\.0 OK: stored as (\S+)$", lines[-1])
    assert m, lines
    return m.group(1).decode()


def unstuff_expected(sender, rcpt, body):
    return b"Return-Path: <" + sender + b">\r\nDelivered-To: " + rcpt + b"\r\n" + body


# ---- storage ----

def test_stores_byte_exact_with_dot_lines_and_8bit(make_relay):
    r = start_sandbox(make_relay)
    body = (b"From: a@example.test\r\nSubject: dots\r\n\r\n"
            b".starts with a dot\r\n"
            b"..two dots\r\n"
            b". \r\n"
            b"caf\xc3\xa9 \xff\xfe raw 8-bit\r\n"
            b"trailing spaces   \r\n"
            b"\r\n")
    stuffed = b"".join((b"." + line if line.startswith(b".") else line)
                       for line in body.splitlines(keepends=True))
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test> BODY=8BITMIME\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<user@example.org>\r\n"), 250, "2.1.5")
    code, _ = c.cmd(b"DATA\r\n")
    assert code == 354
    name = stored_name(c.cmd(stuffed + b".\r\n"))
    expect(c.cmd(b"QUIT\r\n"), 221, "2.0.0")
    files = r.maildir_files()
    assert [n for n, _ in files] == [name]
    assert files[0][1] == unstuff_expected(b"a@example.test", b"user@example.org", body)
    # the Maildir has its three folders and nothing is left in tmp/
    root = os.path.dirname(r.maildir)
    assert sorted(os.listdir(root)) == ["cur", "new", "tmp"]
    assert os.listdir(os.path.join(root, "tmp")) == []


def test_one_file_per_recipient_with_smtplib(make_relay):
    r = start_sandbox(make_relay)
    msg = b"Subject: many\r\n\r\nhello\r\n.dot line\r\n"
    with smtplib.SMTP("127.0.0.1", r.sandbox, timeout=10) as s:
        refused = s.sendmail("sender@example.test",
                             ["one@example.org", "Two@Example.ORG", "three@example.net"], msg)
        assert refused == {}
    files = r.wait_maildir(3)
    assert len(files) == 3
    rcpts = set()
    for name, data in files:
        head, rest = data.split(b"\r\n", 1)
        assert head == b"Return-Path: <sender@example.test>"
        dt, body = rest.split(b"\r\n", 1)
        assert dt.startswith(b"Delivered-To: ")
        rcpts.add(dt[len(b"Delivered-To: "):])
        assert body == msg
    assert rcpts == {b"one@example.org", b"Two@example.org", b"three@example.net"}
    assert len({n for n, _ in files}) == 3


def test_null_sender_and_smtputf8(make_relay):
    r = start_sandbox(make_relay)
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<>\r\n"), 250, "2.1.0")
    # a UTF-8 address without SMTPUTF8 is refused, with it accepted
    expect(c.cmd("RCPT TO:<jos\u00e9@example.org>\r\n".encode()), 553, "5.6.7")
    expect(c.cmd(b"RSET\r\n"), 250, "2.0.0")
    expect(c.cmd(b"MAIL FROM:<> SMTPUTF8\r\n"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<jos\u00e9@example.org>\r\n".encode()), 250, "2.1.5")
    assert c.cmd(b"DATA\r\n")[0] == 354
    stored_name(c.cmd(b"Subject: bounce\r\n\r\nx\r\n.\r\n"))
    (name, data), = r.maildir_files()
    assert data.startswith("Return-Path: <>\r\nDelivered-To: jos\u00e9@example.org\r\n".encode())


# ---- recipient steering ----

def test_fail_421_closes_the_connection(make_relay):
    r = start_sandbox(make_relay)
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<ok@example.org>\r\n"), 250, "2.1.5")
    expect(c.cmd(b"RCPT TO:<FAIL-421-x@example.org>\r\n"), 421, "4.3.2")
    assert c.closed()
    assert r.maildir_files() == []
    assert "mode=fail-421" in r.log("sandbox")


def test_fail_450_and_550_at_rcpt_session_goes_on(make_relay):
    r = start_sandbox(make_relay)
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<fail-450-later@example.org>\r\n"), 450, "4.2.1")
    expect(c.cmd(b"RCPT TO:<Fail-550-nobody@example.org>\r\n"), 550, "5.1.1")
    expect(c.cmd(b"RCPT TO:<good@example.org>\r\n"), 250, "2.1.5")
    assert c.cmd(b"DATA\r\n")[0] == 354
    stored_name(c.cmd(b"Subject: x\r\n\r\nbody\r\n.\r\n"))
    expect(c.cmd(b"NOOP\r\n"), 250, "2.0.0")
    files = r.maildir_files()
    assert len(files) == 1 and b"Delivered-To: good@example.org\r\n" in files[0][1]
    # only failed recipients: DATA is refused
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<fail-550-a@example.org>\r\n"), 550, "5.1.1")
    expect(c.cmd(b"DATA\r\n"), 554, "5.5.1")


def test_slow_recipient_delays_replies(make_relay):
    r = start_sandbox(make_relay, config_edit=sandbox_edit(slow_delay='"1s"'))
    c = greet(r.sandbox)
    t0 = time.monotonic()
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<normal@example.org>\r\n"), 250, "2.1.5")
    assert time.monotonic() - t0 < 0.8, "replies before the slow recipient must not wait"
    t0 = time.monotonic()
    expect(c.cmd(b"RCPT TO:<slow-tarpit@example.org>\r\n"), 250, "2.1.5")
    assert time.monotonic() - t0 >= 0.95
    t0 = time.monotonic()
    assert c.cmd(b"DATA\r\n")[0] == 354
    assert time.monotonic() - t0 >= 0.95
    t0 = time.monotonic()
    stored_name(c.cmd(b"Subject: slow\r\n\r\nbody\r\n.\r\n"))
    assert time.monotonic() - t0 >= 0.95
    # the transaction is over: replies are prompt again
    t0 = time.monotonic()
    expect(c.cmd(b"NOOP\r\n"), 250, "2.0.0")
    assert time.monotonic() - t0 < 0.8
    assert len(r.maildir_files()) == 2


def test_slow_pipelined_replies_stay_in_order(make_relay):
    r = start_sandbox(make_relay, config_edit=sandbox_edit(slow_delay='"1s"'))
    c = greet(r.sandbox)
    t0 = time.monotonic()
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<slow-1@example.org>\r\n"
           b"RCPT TO:<fail-550-x@example.org>\r\nRSET\r\nNOOP\r\n")
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    expect(c.reply(), 550, "5.1.1")
    expect(c.reply(), 250, "2.0.0")
    assert time.monotonic() - t0 >= 2.9  # RCPT, RCPT and RSET each waited 1s
    expect(c.reply(), 250, "2.0.0")


def test_drop_closes_at_data_without_reply(make_relay):
    r = start_sandbox(make_relay)
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<drop-me@example.org>\r\n"), 250, "2.1.5")
    c.send(b"DATA\r\n")
    assert c.f.read() == b"", "no reply may come before the close"
    # and at the first BDAT
    c = greet(r.sandbox)
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<drop-me@example.org>\r\n")
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    c.send(b"BDAT 5 LAST\r\nhello")
    assert c.f.read() == b""
    assert r.maildir_files() == []
    assert "mode=drop" in r.log("sandbox")


# ---- protocol ----

def test_starttls_with_smtplib(make_relay):
    r = start_sandbox(make_relay)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", r.sandbox, timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                    "chunking"):
            assert s.has_extn(ext), ext
        code, _ = s.starttls(context=ctx)
        assert code == 220
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        s.sendmail("a@example.test", ["tls@example.org"], b"Subject: tls\r\n\r\nsecret\r\n")
    (name, data), = r.wait_maildir(1)
    assert data.endswith(b"\r\n\r\nsecret\r\n")
    assert "event=tls version=TLSv1." in r.log("sandbox")


def test_starttls_discards_pipelined_plaintext(make_relay):
    r = start_sandbox(make_relay)
    c = greet(r.sandbox)
    # a command injected behind STARTTLS must not run, neither before nor after TLS
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@example.test>\r\n")
    expect(c.reply(), 220, "2.0.0")
    c.starttls()
    # state is reset: MAIL needs a new EHLO, so the injected MAIL left no trace
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 503, "5.5.1")
    code, lines = c.cmd(b"EHLO client.test\r\n")
    assert code == 250 and b"STARTTLS" not in b"\n".join(lines)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"STARTTLS\r\n"), 503, "5.5.1")


def test_sighup_reloads_the_certificate(make_relay):
    r = start_sandbox(make_relay)
    proc = r.procs["sandbox-1"]

    def tls_works():
        c = greet(r.sandbox)
        expect(c.cmd(b"STARTTLS\r\n"), 220, "2.0.0")
        c.starttls()
        assert c.cmd(b"EHLO client.test\r\n")[0] == 250
        c.close()

    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=tls_reloaded" in r.log("sandbox"), timeout=5, what="tls_reloaded")
    assert proc.poll() is None
    tls_works()
    # a broken certificate on disk: refused, the old one stays in use
    with open(r.cert, "w") as f:
        f.write("not a certificate\n")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=tls_reload_failed" in r.log("sandbox"), timeout=5,
             what="tls_reload_failed")
    assert proc.poll() is None
    tls_works()


def test_bdat_chunks_are_never_commands(make_relay):
    r = start_sandbox(make_relay)
    c = greet(r.sandbox)
    chunk1 = b"Subject: bdat\r\n\r\nQUIT\r\n.\r\nRSET\r\n"
    chunk2 = b"..not unstuffed\r\n\xff\x00binary\r\n"
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<chunky@example.org>\r\n"
           + b"BDAT %d\r\n" % len(chunk1) + chunk1
           + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2
           + b"NOOP\r\n")
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    expect(c.reply(), 250, "2.0.0")
    name = stored_name(c.reply())
    expect(c.reply(), 250, "2.0.0")  # the NOOP after the last chunk
    (fname, data), = r.maildir_files()
    assert fname == name
    assert data == unstuff_expected(b"a@example.test", b"chunky@example.org", chunk1 + chunk2)
    # BDAT without a transaction: the chunk is read and refused, the session stays in step
    c.send(b"BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n")
    expect(c.reply(), 503, "5.5.1")
    expect(c.reply(), 250, "2.0.0")
    # DATA after BDAT is refused
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<x@example.org>\r\nBDAT 3\r\nabcDATA\r\n")
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    expect(c.reply(), 250, "2.0.0")
    expect(c.reply(), 503, "5.5.1")
    # a BDAT size that is not a number cannot be kept in step: refused and closed
    expect(c.cmd(b"BDAT lots\r\n"), 501, "5.5.4")
    assert c.closed()


def test_pipelined_commands_answered_in_order(make_relay):
    r = start_sandbox(make_relay)
    c = Client(r.sandbox)
    assert c.reply()[0] == 220
    c.send(b"EHLO pipe.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<one@example.org>\r\n"
           b"RCPT TO:<fail-550-no@example.org>\r\nRCPT TO:<bad address>\r\n"
           b"VRFY someone\r\nRCPT TO:<two@example.org>\r\nDATA\r\n")
    code, lines = c.reply()
    assert code == 250 and lines[-1].startswith(b"250 ")
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    expect(c.reply(), 550, "5.1.1")
    expect(c.reply(), 501, "5.1.3")
    expect(c.reply(), 252, "2.0.0")
    expect(c.reply(), 250, "2.1.5")
    assert c.reply()[0] == 354
    c.send(b"Subject: pipe\r\n\r\nx\r\n.\r\nMAIL FROM:<b@example.test>\r\nRCPT TO:<three@example.org>"
           b"\r\nDATA\r\n")
    stored_name(c.reply())
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    assert c.reply()[0] == 354
    stored_name(c.cmd(b"y\r\n.\r\n"))
    assert len(r.maildir_files()) == 3


def test_command_line_limit_and_errors(make_relay):
    r = start_sandbox(make_relay)
    c = Client(r.sandbox)
    assert c.reply()[0] == 220
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 503, "5.5.1")  # before EHLO
    expect(c.cmd(b"EHLO\r\n"), 501, "5.5.4")
    assert c.cmd(b"HELO old.test\r\n")[0] == 250
    expect(c.cmd(b"NOOP " + b"x" * 593 + b"\r\n"), 500, "5.5.2")  # 600 octets
    expect(c.cmd(b"NOOP " + b"x" * 505 + b"\r\n"), 250, "2.0.0")  # 512 octets
    # an endless line is answered once, then the session is back in step
    c.send(b"Z" * 70000)
    expect(c.reply(), 500, "5.5.2")
    c.send(b"Z" * 1000 + b"\r\nNOOP\r\n")
    expect(c.reply(), 250, "2.0.0")
    expect(c.cmd(b"NO\x00OP\r\n"), 500, "5.5.2")
    expect(c.cmd(b"WIBBLE\r\n"), 500, "5.5.1")
    expect(c.cmd(b"RCPT TO:<a@example.org>\r\n"), 503, "5.5.1")
    expect(c.cmd(b"DATA\r\n"), 503, "5.5.1")
    expect(c.cmd(b"MAIL TO:<a@example.org>\r\n"), 501, "5.5.4")
    expect(c.cmd(b"MAIL FROM:<a@>\r\n"), 501, "5.1.7")
    expect(c.cmd(b"MAIL FROM:<a@@example.org>\r\n"), 553, "5.1.3")
    expect(c.cmd(b"MAIL FROM:<@route.test:a@example.org>\r\n"), 553, "5.1.3")
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 503, "5.5.1")
    expect(c.cmd(b"DATA\r\n"), 554, "5.5.1")
    expect(c.cmd(b"DATA now\r\n"), 501, "5.5.4")
    expect(c.cmd(b"VRFY postmaster\r\n"), 252, "2.0.0")
    expect(c.cmd(b"EXPN list\r\n"), 502, "5.5.1")
    expect(c.cmd(b"RSET\r\n"), 250, "2.0.0")
    expect(c.cmd(b"QUIT\r\n"), 221, "2.0.0")
    assert c.closed()


def test_bare_lf_cannot_smuggle_a_message(make_relay):
    r = start_sandbox(make_relay)
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<victim@example.org>\r\n"), 250, "2.1.5")
    assert c.cmd(b"DATA\r\n")[0] == 354
    # each of these would end the message early in a lax parser
    c.send(b"Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<evil@example.test>\n"
           b"RCPT TO:<smuggled@example.org>\nDATA\nsmuggled\n.\n"
           b"more\r\n.\nstill inside\r\n\n.\r\nand inside\r\n.\r\nNOOP\r\n")
    # one answer for the whole message, then the NOOP: nothing was run from inside it
    expect(c.reply(), 554, "5.6.0")
    expect(c.reply(), 250, "2.0.0")
    assert r.maildir_files() == []
    c.send(b"NOOP\r\n")
    expect(c.reply(), 250, "2.0.0")


def test_message_size_limit(make_relay):
    r = start_sandbox(make_relay, config_edit=sandbox_edit(max_message_size='"2K"'))
    c = greet(r.sandbox)
    code, lines = c.cmd(b"EHLO again.test\r\n")
    assert b"250-SIZE 2048" in lines
    expect(c.cmd(b"MAIL FROM:<a@example.test> SIZE=4096\r\n"), 552, "5.3.4")
    expect(c.cmd(b"MAIL FROM:<a@example.test> SIZE=lots\r\n"), 501, "5.5.4")
    expect(c.cmd(b"MAIL FROM:<a@example.test> SIZE=100\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<big@example.org>\r\n"), 250, "2.1.5")
    assert c.cmd(b"DATA\r\n")[0] == 354
    expect(c.cmd((b"y" * 70 + b"\r\n") * 40 + b".\r\n"), 552, "5.3.4")
    # BDAT: the chunk that crosses the limit and every later one are refused
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<big@example.org>\r\n"
           b"BDAT 1500\r\n" + b"a" * 1500 + b"BDAT 1500\r\n" + b"b" * 1500
           + b"BDAT 10 LAST\r\n" + b"c" * 10 + b"NOOP\r\n")
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    expect(c.reply(), 250, "2.0.0")
    expect(c.reply(), 552, "5.3.4")
    expect(c.reply(), 552, "5.3.4")
    expect(c.reply(), 250, "2.0.0")
    assert r.maildir_files() == []
    # a line longer than 998 octets is refused as a whole
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<long@example.org>\r\n"), 250, "2.1.5")
    assert c.cmd(b"DATA\r\n")[0] == 354
    expect(c.cmd(b"z" * 1200 + b"\r\n.\r\n"), 554, "5.6.0")
    assert r.maildir_files() == []


def test_disk_error_gives_451_and_leaves_nothing(make_relay):
    r = start_sandbox(make_relay)
    tmp = os.path.join(os.path.dirname(r.maildir), "tmp")
    os.rmdir(tmp)
    with open(tmp, "w") as f:  # tmp/ is now a file: nothing can be spooled
        f.write("in the way")
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<disk@example.org>\r\n"), 250, "2.1.5")
    expect(c.cmd(b"DATA\r\n"), 451, "4.3.0")
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<disk@example.org>\r\nBDAT 4 LAST\r\nbody")
    expect(c.reply(), 250, "2.1.0")
    expect(c.reply(), 250, "2.1.5")
    expect(c.reply(), 451, "4.3.0")
    os.unlink(tmp)
    os.mkdir(tmp)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<disk@example.org>\r\n"), 250, "2.1.5")
    assert c.cmd(b"DATA\r\n")[0] == 354
    stored_name(c.cmd(b"ok\r\n.\r\n"))
    assert len(r.maildir_files()) == 1


def test_idle_client_is_disconnected(make_relay):
    r = start_sandbox(make_relay, config_edit=sandbox_edit(idle_timeout='"1s"'))
    c = greet(r.sandbox)
    t0 = time.monotonic()
    expect(c.reply(), 421, "4.4.2")
    assert 0.9 <= time.monotonic() - t0 < 5
    assert c.closed()
    # and in the middle of DATA
    c = greet(r.sandbox)
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<idle@example.org>\r\n")
    c.reply(), c.reply()
    assert c.cmd(b"DATA\r\n")[0] == 354
    c.send(b"Subject: half a message\r\n")
    expect(c.reply(), 421, "4.4.2")
    assert c.closed()
    assert r.maildir_files() == []
    assert os.listdir(os.path.join(os.path.dirname(r.maildir), "tmp")) == []


def test_connection_limit(make_relay):
    r = start_sandbox(make_relay, config_edit=sandbox_edit(max_connections=2))
    a = greet(r.sandbox)
    b = greet(r.sandbox)
    c = Client(r.sandbox)
    expect(c.reply(), 421, "4.3.2")
    assert c.closed()
    a.cmd(b"QUIT\r\n")
    assert a.closed()

    def third_gets_in():
        d = Client(r.sandbox)
        code, _ = d.reply()
        d.close()
        return code == 220
    wait_for(third_gets_in, timeout=5, what="a free connection slot")
    expect(b.cmd(b"NOOP\r\n"), 250, "2.0.0")


def test_garbage_does_not_hurt_the_server(make_relay):
    r = start_sandbox(make_relay)
    rnd = bytes((i * 7919 + 13) % 256 for i in range(200000))
    for payload in (rnd, b"\r\n" * 5000, b"\x00" * 100000, b"BDAT 99999999999999999999\r\n",
                    b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n" + rnd):
        c = Client(r.sandbox)
        try:
            c.send(payload)
        except OSError:
            pass
        c.close()
    # a client that vanishes in the middle of a TLS handshake
    c = greet(r.sandbox)
    c.cmd(b"STARTTLS\r\n")
    c.send(b"\x16\x03\x01\x00\x05hello")
    c.close()
    assert r.procs["sandbox-1"].poll() is None
    with smtplib.SMTP("127.0.0.1", r.sandbox, timeout=10) as s:
        s.sendmail("a@example.test", ["after@example.org"], b"Subject: still here\r\n\r\nx\r\n")
    assert len(r.wait_maildir(1)) == 1


def test_bad_config_stops_with_file_and_line(make_relay):
    def run_with(edit):
        r = make_relay(config_edit=edit)
        p = subprocess.run([os.path.join(BIN, "sendarix-sandbox"), "--config", r.config],
                           capture_output=True, text=True, timeout=20, cwd=r.var)
        return r, p

    r, p = run_with(sandbox_edit(slow_delay='"soon"'))
    assert p.returncode == 1
    assert re.search(r"sendarix\.conf:\d+: sandbox\.slow_delay: .*not a valid duration", p.stderr), p.stderr
    r, p = run_with(lambda t: re.sub(r'  maildir = "[^"]*";\n', "", t))
    assert p.returncode == 1 and "sandbox.maildir: required setting is missing" in p.stderr, p.stderr
    r, p = run_with(lambda t: re.sub(r'(sandbox = \{.*?)  tls_key = "[^"]*";\n', r"\1", t,
                                     flags=re.S))
    assert p.returncode == 1 and re.search(r"sendarix\.conf:\d+: sandbox\.tls_", p.stderr), p.stderr
    r, p = run_with(sandbox_edit(max_connections=0))
    assert p.returncode == 1 and "sandbox.max_connections" in p.stderr, p.stderr
    r, p = run_with(sandbox_edit(colour='"blue"'))
    assert p.returncode == 1 and "sandbox.colour: unknown setting" in p.stderr, p.stderr


# ---- the control socket ----

@pytest.fixture(scope="module")
def pb():
    """The bus schemas compiled for Python from proto/, in a temporary folder."""
    zmq = pytest.importorskip("zmq")
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.skip("protoc is not installed: cannot compile the bus schemas for the test")
    out = tempfile.mkdtemp(prefix="sandbox-pb-")
    proto_dir = os.path.join(ROOT, "proto")
    files = sorted(os.path.join("sendarix", "v1", f)
                   for f in os.listdir(os.path.join(proto_dir, "sendarix", "v1"))
                   if f.endswith(".proto"))
    subprocess.run([protoc, "-I", proto_dir, "--python_out", out] + files, check=True)
    sys.path.insert(0, out)
    try:
        from sendarix.v1 import envelope_pb2
    except ImportError as e:
        pytest.skip("cannot import the compiled bus schemas: %s" % e)
    yield zmq, envelope_pb2
    sys.path.remove(out)
    shutil.rmtree(out, ignore_errors=True)


def bus_request(pb, r, fill, timeout_ms=5000):
    zmq, envelope_pb2 = pb
    endpoint = "ipc://%s/run/sandbox-1.sock" % r.var
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        env = envelope_pb2.Envelope(version=1, request_id=4242, sender="test/1")
        fill(env)
        s.send(env.SerializeToString())
        assert s.poll(timeout_ms), "no reply from the sandbox control socket"
        reply = envelope_pb2.Envelope()
        reply.ParseFromString(s.recv())
        assert reply.request_id == 4242
        return reply
    finally:
        s.close()


def fail_set(pb, r, code, seconds, text=""):
    def fill(env):
        env.sandbox_fail_set.code = code
        env.sandbox_fail_set.seconds = seconds
        env.sandbox_fail_set.text = text
    return bus_request(pb, r, fill)


def stats(pb, r):
    rep = bus_request(pb, r, lambda env: env.service_ping.SetInParent())
    assert rep.WhichOneof("body") == "service_pong"
    assert rep.service_pong.service == "sandbox"
    return {a.key: a.value for a in rep.service_pong.stats}


def test_fail_mode_over_the_bus(make_relay, pb):
    r = start_sandbox(make_relay)
    before = time.time() * 1000
    rep = fail_set(pb, r, 421, 30, "drill in progress")
    assert rep.WhichOneof("body") == "sandbox_fail_set_reply", rep
    assert rep.sandbox_fail_set_reply.code == 421
    assert before + 29000 <= rep.sandbox_fail_set_reply.until_ms <= time.time() * 1000 + 31000
    c = Client(r.sandbox)
    code, lines = c.reply()
    assert lines == [b"421 4.3.2 drill in progress"]
    assert c.closed()
    st = stats(pb, r)
    assert st["fail_code"] == "421" and 0 < int(st["fail_seconds_left"]) <= 30

    # 450 for every RCPT, whatever the recipient, in sessions already open too
    assert fail_set(pb, r, 0, 0).sandbox_fail_set_reply.until_ms == 0
    old = greet(r.sandbox)
    fail_set(pb, r, 450, 30)
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<anyone@example.org>\r\n"), 450, "4.2.1")
    expect(c.cmd(b"RCPT TO:<slow-x@example.org>\r\n"), 450, "4.2.1")
    expect(old.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(old.cmd(b"RCPT TO:<anyone@example.org>\r\n"), 450, "4.2.1")
    # and 421 closes open sessions at once (a kept connection must fail as well)
    fail_set(pb, r, 0, 0)
    kept = greet(r.sandbox)
    fail_set(pb, r, 421, 30, "closing all")
    assert kept.reply() == (421, [b"421 4.3.2 closing all"])
    assert kept.closed()
    fail_set(pb, r, 450, 30)
    for code, enh in ((451, "4.3.0"), (550, "5.2.1"), (554, "5.3.0")):
        fail_set(pb, r, code, 30, "custom %d" % code)
        c = greet(r.sandbox)
        expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
        got, lines = c.cmd(b"RCPT TO:<anyone@example.org>\r\n")
        assert lines == [b"%d %s custom %d" % (code, enh.encode(), code)]

    # cleared at once
    fail_set(pb, r, 0, 0)
    c = greet(r.sandbox)
    expect(c.cmd(b"MAIL FROM:<a@example.test>\r\n"), 250, "2.1.0")
    expect(c.cmd(b"RCPT TO:<anyone@example.org>\r\n"), 250, "2.1.5")
    assert stats(pb, r)["fail_code"] == "0"

    # and over by itself when the time is up
    fail_set(pb, r, 421, 1)
    assert Client(r.sandbox).reply()[0] == 421
    time.sleep(1.2)
    assert Client(r.sandbox).reply()[0] == 220


def test_fail_mode_rejects_bad_requests(make_relay, pb):
    r = start_sandbox(make_relay)
    for code, seconds, text in ((499, 5, ""), (250, 5, ""), (421, 0, ""),
                                (421, 10 ** 9, ""), (450, 5, "bad\r\ntext"), (450, 5, "x" * 300)):
        rep = fail_set(pb, r, code, seconds, text)
        assert rep.WhichOneof("body") == "error", (code, seconds, text, rep)
        assert rep.error.status.code == 400 and rep.error.status.text
    # an unrelated request is refused too
    rep = bus_request(pb, r, lambda env: env.queue_message_show.SetInParent())
    assert rep.WhichOneof("body") == "error" and rep.error.status.code == 400
    # none of it changed anything
    assert Client(r.sandbox).reply()[0] == 220
    st = stats(pb, r)
    assert st["fail_code"] == "0"
    assert int(st["connections_total"]) >= 1


def test_stats_count_connections_and_messages(make_relay, pb):
    r = start_sandbox(make_relay)
    base = int(stats(pb, r)["connections_total"])
    with smtplib.SMTP("127.0.0.1", r.sandbox, timeout=10) as s:
        s.sendmail("a@example.test", ["a@example.org", "b@example.org"], b"Subject: s\r\n\r\nx\r\n")
        st = stats(pb, r)
        assert st["connections"] == "1"
    st = stats(pb, r)
    assert int(st["connections_total"]) == base + 1
    assert st["messages_stored"] == "1" and st["files_stored"] == "2"


# ---- the CLI ----

def test_fail_mode_through_sendarixctl(make_relay):
    ctl = os.path.join(BIN, "sendarixctl")
    if not os.access(ctl, os.X_OK):
        pytest.skip("build/bin/sendarixctl is not built")
    r = start_sandbox(make_relay)
    p = r.ctl_run("sandbox", "fail", "--code", "421", "--seconds", "5", "--text", "cli drill")
    if p.returncode == 2:
        pytest.skip("sendarixctl does not know 'sandbox fail' yet: %s" % p.stderr.strip()[:200])
    if p.returncode == 0 and not p.stdout.strip():
        pytest.skip("sendarixctl is still a placeholder (exit 0, no output)")
    assert p.returncode == 0, (p.stdout, p.stderr)
    doc = json.loads(p.stdout)
    assert doc.get("code") == 421, doc
    for sb in doc.get("sandboxes", []):
        assert sb.get("code") == 421, doc
    c = Client(r.sandbox)
    assert c.reply()[1] == [b"421 4.3.2 cli drill"]
    assert c.closed()
    r.ctl("sandbox", "fail", "--code", "0", "--seconds", "0")
    assert Client(r.sandbox).reply()[0] == 220
    p = r.ctl_run("sandbox", "fail", "--code", "499", "--seconds", "5")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "499" in p.stdout + p.stderr


def test_many_clients_at_once_and_a_large_message(make_relay):
    import concurrent.futures
    r = start_sandbox(make_relay)
    big = b"Subject: big\r\n\r\n" + b"".join(
        b"%07d " % i + bytes((i * 7 + j) % 94 + 33 for j in range(70)) + b"\r\n"
        for i in range(80000))  # about 6 MB

    def send(i):
        with smtplib.SMTP("127.0.0.1", r.sandbox, timeout=30) as s:
            s.sendmail("a@example.test", ["c%d@example.org" % i],
                       big if i == 0 else b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i))
        return i

    with concurrent.futures.ThreadPoolExecutor(max_workers=60) as ex:
        assert sorted(ex.map(send, range(120))) == list(range(120))
    files = r.wait_maildir(120)
    assert len(files) == 120
    by_rcpt = {data.split(b"\r\n", 2)[1]: data for _, data in files}
    assert by_rcpt[b"Delivered-To: c0@example.org"].split(b"\r\n", 2)[2] == big
    assert by_rcpt[b"Delivered-To: c77@example.org"].endswith(b"\r\n\r\nbody 77\r\n")
