"""Every scripted SMTP dialog in tests/dialogs/, played against a live relay.

Dialogs with the same config share one relay (started when the first of them
runs, stopped when the next config comes up); a dialog marked isolate gets a
relay of its own. The file format is described in tests/dialogs/README.md.
"""
import glob
import os
import re
import socket
import threading

import pytest

from dialog import DialogError, Dialog, add_demo_login, config_editor, parse, parse_text, run
from harness import ROOT, Relay

DIALOG_DIR = os.path.join(ROOT, "tests", "dialogs")


def dialog_files():
    return sorted(glob.glob(os.path.join(DIALOG_DIR, "**", "*.dialog"), recursive=True))


def params():
    items = []
    for path in dialog_files():
        d = parse(path)
        rel = os.path.relpath(path, ROOT)
        marks = []
        if d.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=d.xfail))
        elif d.pending:
            marks.append(pytest.mark.xfail(strict=False, reason=d.pending))
        items.append(((d.isolate, repr(d.config_key), rel), pytest.param(d, id=rel, marks=marks)))
    # dialogs that share a config run one after the other, on one relay
    return [p for _, p in sorted(items, key=lambda kv: kv[0])]


def start_relay(name, settings):
    r = Relay(name, config_edit=config_editor(settings) if settings else None)
    try:
        r.start()
        add_demo_login(r)
    except BaseException:
        r.cleanup()
        raise
    return r


def relay_hostname(r):
    with open(r.config) as f:
        m = re.search(r'hostname = "([^"]+)"', f.read())
    return m.group(1) if m else "relay.sendarix.test"


class RelayPool:
    def __init__(self):
        self.key = None
        self.relay = None

    def get(self, d):
        if d.isolate:
            return start_relay("dialog-own", d.config)
        if self.relay is None or self.key != d.config_key:
            self.close()
            self.relay = start_relay("dialog-shared", d.config)
            self.key = d.config_key
        return self.relay

    def close(self):
        if self.relay:
            self.relay.cleanup()
        self.relay = None
        self.key = None


@pytest.fixture(scope="module")
def pool():
    p = RelayPool()
    yield p
    p.close()


def dead_processes(r):
    return ["%s (exit %s)" % (k, p.returncode) for k, p in r.procs.items() if p.poll() is not None]


@pytest.mark.parametrize("dialog", params())
def test_dialog(pool, dialog):
    r = pool.get(dialog)
    try:
        try:
            run(dialog, r, relay_hostname(r))
        except DialogError as e:
            # the message holds the dialog line, both sides and the transcript
            pytest.fail(str(e), pytrace=False)
        finally:
            dead = dead_processes(r)
            if dead:
                logs = "\n".join("---- %s ----\n%s" % (k, r.log(k)[-3000:]) for k in r.procs)
                if r is pool.relay:
                    pool.close()
                pytest.fail("relay process died during the dialog: %s\n%s" % (", ".join(dead),
                                                                             logs))
    finally:
        if dialog.isolate:
            r.cleanup()


# ---- the runner itself: a dialog that expects the wrong thing must fail, clearly ----

WRONG = """# expects 250 where the relay must refuse
role: submission
S: 220 *
C: EHLO client.example
S: 250-*
S*: 250-*
S: 250 *
C: MAIL FROM:<app@example.test>
S: 250 2.1.0 *
"""


def test_runner_reports_a_mismatch_with_the_transcript(pool):
    d = parse_text(WRONG, "wrong.dialog")
    r = pool.get(Dialog("defaults"))
    with pytest.raises(DialogError) as e:
        run(d, r, relay_hostname(r))
    text = str(e.value)
    assert "dialog failed at wrong.dialog:9" in text
    assert "expected '250 2.1.0 *'" in text
    assert "received: 530 5.7.0 Must issue a STARTTLS command first" in text
    assert "transcript" in text and "C: MAIL FROM:<app@example.test>" in text


def test_runner_catches_unexpected_replies(pool):
    r = pool.get(Dialog("defaults"))
    # a reply nobody asked about
    d = parse_text("S: 220 *\nC> NOOP\\r\\nNOOP\\r\\n\nS: 250 2.0.0 OK\n", "extra.dialog")
    with pytest.raises(DialogError) as e:
        run(d, r, relay_hostname(r))
    assert "does not expect" in str(e.value)
    # a server that keeps the connection open where the dialog expects a close
    d = parse_text("timeout: 1\nS: 220 *\nclose\n", "open.dialog")
    with pytest.raises(DialogError) as e:
        run(d, r, relay_hostname(r))
    assert "still open" in str(e.value)
    # S! and S+ on a reply
    d = parse_text("S: 220 *\nC: EHLO x.example\nS: 250-*\nS!: 250-PIPELINING\n", "neg.dialog")
    with pytest.raises(DialogError) as e:
        run(d, r, relay_hostname(r))
    assert "no line of this reply may match" in str(e.value)


def test_every_dialog_parses_and_has_a_title():
    for path in dialog_files():
        d = parse(path)
        assert d.title, "%s has no title comment" % path
        assert d.steps or d.login != "none", "%s has no steps" % path


class FakeServer:
    """A one-connection SMTP server that answers each line with the next canned reply."""

    def __init__(self, greeting, replies):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        port = self.lsock.getsockname()[1]
        self.submission = self.smtps = self.legacy = port
        self.cert = None
        self.greeting, self.replies = greeting, list(replies)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        c, _ = self.lsock.accept()
        with c:
            c.sendall(self.greeting)
            f = c.makefile("rb")
            for reply in self.replies:
                if not f.readline():
                    return
                c.sendall(reply)
            f.readline()

    def log(self, key):
        return ""

    def close(self):
        self.lsock.close()


def test_runner_checks_the_format_of_every_reply():
    cases = [
        (b"250 OK without a code\r\n", "reply without an enhanced status code"),
        (b"250 2.0.0 ended by a bare LF\n", "not ended by CRLF"),
        (b"250-2.0.0 first\r\n251 2.0.0 second\r\n", "multi-line reply changes code"),
        (b"25O 2.0.0 no code\r\n", "without a 3-digit code"),
    ]
    for reply, problem in cases:
        srv = FakeServer(b"220 fake.example ESMTP\r\n", [reply])
        try:
            d = parse_text("S: 220 *\nC: NOOP\nS*: *\n", "fake.dialog")
            with pytest.raises(DialogError) as e:
                run(d, srv, "fake.example")
            assert problem in str(e.value), str(e.value)
        finally:
            srv.close()
    # the same server with well-formed replies passes
    srv = FakeServer(b"220 fake.example ESMTP\r\n", [b"250-2.0.0 a\r\n250 2.0.0 b\r\n"])
    try:
        run(parse_text("S: 220 *\nC: NOOP\nS: 250-2.0.0 a\nS: 250 2.0.0 b\n", "ok.dialog"),
            srv, "fake.example")
    finally:
        srv.close()
