"""The queue's promise under real failures: retries and greylisting waits,
holding a failing domain, bounces with delivery status notifications to the
sender, the suppression list, expiry, and the operators' controls. Mail
enters through the legacy port (allowlisted loopback, no AUTH) so these
tests need nothing but the queue's own behaviour."""
import email
import re
import smtplib
import socket
import socketserver
import threading
import time

import pytest

from buslib import Bus, msg
from harness import wait_for


def queue_conf(**settings):
    """config_edit that sets settings of the queue section (replacing the template's)."""
    def edit(text):
        head, rest = text.split("queue = {\n", 1)
        section, tail = rest.split("};", 1)
        for k, v in settings.items():
            line = "  %s = %s;\n" % (k, v)
            if re.search(r"^  %s = " % k, section, re.M):
                section = re.sub(r"^  %s = .*\n" % k, line, section, flags=re.M)
            else:
                section = line + section
        return head + "queue = {\n" + section + "};" + tail
    return edit


def chain(*edits):
    def edit(text):
        for e in edits:
            text = e(text)
        return text
    return edit


def route_to(port):
    """config_edit: the router's only route goes to 127.0.0.1:port."""
    def edit(text):
        return re.sub(r'endpoints = \[ "127\.0\.0\.1:\d+" \]',
                      'endpoints = [ "127.0.0.1:%d" ]' % port, text)
    return edit


def send_legacy(r, rcpts, body=b"Subject: t\r\n\r\nhello\r\n", sender="app@example.test",
                rcpt_options=()):
    with smtplib.SMTP("127.0.0.1", r.legacy, timeout=10) as s:
        s.ehlo()
        s.mail(sender)
        for rc in rcpts:
            code, text = s.rcpt(rc, list(rcpt_options))
            assert code == 250, text
        code, text = s.data(body)
        assert code == 250, text
        return re.search(r"queued as ([0-9a-v]{20})", text.decode()).group(1)


def events(r, msgid):
    return r.ctl("log", "search", "--id", msgid)["events"]


def wait_event(r, msgid, etype, timeout=20, count=1):
    def have():
        got = [e for e in events(r, msgid) if e["type"] == etype]
        return got if len(got) >= count else None
    return wait_for(have, timeout=timeout, what="%s event for %s" % (etype, msgid))


def qbus(r):
    return Bus("ipc://%s/run/queue-1.sock" % r.var)


def qreq(r, body, message, reply):
    with qbus(r) as b:
        name, m, _ = b.request(body, message, timeout=10)
    assert name == reply, (name, m)
    return m


def reports(r):
    """Delivery status notifications that reached the sandbox."""
    out = []
    for name, data in r.maildir_files():
        m = email.message_from_bytes(data)
        if m.get_content_type() == "multipart/report":
            out.append(m)
    return out


def status_fields(report):
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            text = part.get_payload()
            if isinstance(text, list):
                text = "\n".join(str(p) for p in text)
            return str(text)
    return ""


def test_hard_bounce_reports_to_sender_and_suppresses(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    first = send_legacy(r, ["fail-550-gone@example.org", "fine@example.org"])
    wait_event(r, first, "dsn_queued")
    wait_event(r, first, "suppression_added")
    rep = wait_for(lambda: reports(r), what="a bounce report in the sandbox")
    assert len(rep) == 1
    report = rep[0]
    assert report["To"] == "<app@example.test>"
    assert "MAILER-DAEMON" in report["From"]
    fields = status_fields(report)
    assert "Final-Recipient: rfc822; fail-550-gone@example.org" in fields
    assert "Action: failed" in fields and "Status: 5.1.1" in fields
    assert "fine@example.org" not in fields
    # the report itself came from the null sender
    files = [d for n, d in r.maildir_files() if b"multipart/report" in d]
    assert files[0].startswith(b"Return-Path: <>")
    check = qreq(r, "queue_suppress_check",
                 msg("QueueSuppressCheck", tenant="demo", address="fail-550-gone@example.org"),
                 "queue_suppress_reply")
    assert len(check.entries) == 1 and check.entries[0].reason == "hard-bounce"
    assert check.entries[0].reply.enhanced == "5.1.1"

    # the next message to that address is not sent at all
    before = len(r.maildir_files())
    second = send_legacy(r, ["FAIL-550-gone@example.org"])
    ev = wait_event(r, second, "suppressed")
    assert ev[0]["recipient"].lower() == "fail-550-gone@example.org"
    time.sleep(1)
    assert not [e for e in events(r, second) if e["type"] in ("delivered", "bounced")]
    assert len(r.maildir_files()) == before
    shown = r.ctl("queue", "show", second)
    assert shown["recipients"][0]["state"] == "suppressed"


def test_notify_never_sends_no_report_and_success_does(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    never = send_legacy(r, ["fail-550-a@example.org"], rcpt_options=["NOTIFY=NEVER"])
    wait_event(r, never, "bounced")
    ok = send_legacy(r, ["happy@example.org"], rcpt_options=["NOTIFY=SUCCESS"])
    wait_event(r, ok, "dsn_queued")
    rep = wait_for(lambda: reports(r), what="a success report")
    time.sleep(1)
    rep = reports(r)
    assert len(rep) == 1
    assert "Action: relayed" in status_fields(rep[0])
    assert not [e for e in events(r, never) if e["type"] == "dsn_queued"]


class GreylistHandler(socketserver.StreamRequestHandler):
    """A destination that greylists each new recipient once, naming a wait."""
    seen = set()
    tries = []

    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 grey.test ESMTP")
        rcpt_ok = False
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").strip()
            up = cmd.upper()
            if up.startswith("EHLO") or up.startswith("HELO"):
                self.reply("250 grey.test")
            elif up.startswith("MAIL"):
                self.reply("250 2.1.0 ok")
            elif up.startswith("RCPT"):
                addr = cmd[8:].strip("<> ")
                GreylistHandler.tries.append((addr, time.time()))
                if addr in GreylistHandler.seen:
                    rcpt_ok = True
                    self.reply("250 2.1.5 ok")
                else:
                    GreylistHandler.seen.add(addr)
                    self.reply("451 4.7.1 Greylisted, please try again in 3 seconds")
            elif up == "DATA":
                if not rcpt_ok:
                    self.reply("554 5.5.1 no recipients")
                    continue
                self.reply("354 go")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                self.reply("250 2.0.0 stored")
            elif up == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("250 2.0.0 ok")


def test_greylisting_retried_at_the_asked_interval(make_relay):
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), GreylistHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        # the normal backoff would wait a minute: the reply asks for 3 s
        r = make_relay(retry_base="60s", config_edit=route_to(srv.server_address[1]))
        r.start()
        mid = send_legacy(r, ["grey@example.org"])
        wait_event(r, mid, "delivered", timeout=30)
        tries = [t for a, t in GreylistHandler.tries if a == "grey@example.org"]
        assert len(tries) == 2
        assert 2.5 <= tries[1] - tries[0] <= 10, tries
    finally:
        srv.shutdown()


def test_failing_domain_is_held_and_reported(make_relay):
    # a destination that refuses connections
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    r = make_relay(retry_base="1s", config_edit=chain(
        route_to(port), queue_conf(domain_hold_after=2, domain_hold_base='"30s"')))
    r.start()
    ids = [send_legacy(r, ["x%d@dead.example" % i]) for i in range(3)]

    def held():
        st = qreq(r, "queue_stats", msg("QueueStats"), "queue_stats_reply")
        d = [d for d in st.domains if d.domain == "dead.example"]
        return d and d[0].held_until_ms and d[0]
    d = wait_for(held, timeout=30, what="dead.example held")
    assert d.failures >= 2
    assert "4.4." in d.last_error and "refused" in d.last_error
    assert d.pending == 3
    # while held, nobody is tried: the attempt counts stay put
    counts = [r.ctl("queue", "show", i)["recipients"][0]["attempts"] for i in ids]
    time.sleep(4)
    assert [r.ctl("queue", "show", i)["recipients"][0]["attempts"] for i in ids] == counts


def test_soft_bounces_become_hard(make_relay):
    r = make_relay(retry_base="1s", config_edit=queue_conf(soft_bounce_limit=2))
    r.start()
    mid = send_legacy(r, ["fail-450-full@example.org"])
    ev = wait_event(r, mid, "bounced", timeout=30)
    assert any(a == "reason" and "soft" in v for e in ev for a, v in e["attrs"].items()) or \
        any("soft" in e["attrs"].get("reason", "") for e in ev)
    wait_event(r, mid, "suppression_added")
    check = qreq(r, "queue_suppress_check",
                 msg("QueueSuppressCheck", tenant="demo", address="fail-450-full@example.org"),
                 "queue_suppress_reply")
    assert check.entries and check.entries[0].reason == "soft-bounce"


def test_expiry_bounces_with_5_4_7(make_relay):
    r = make_relay(retry_base="1s", config_edit=queue_conf(max_age='"3s"'))
    r.start()
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "60")
    mid = send_legacy(r, ["late@example.org"])
    wait_event(r, mid, "expired", timeout=30)
    r.ctl("sandbox", "fail", "--code", "0", "--seconds", "0")
    rep = wait_for(lambda: reports(r), timeout=30, what="the expiry report")
    fields = status_fields(rep[0])
    assert "Status: 5.4.7" in fields and "late@example.org" in fields
    assert "Diagnostic-Code: smtp; 421" in fields


def test_operator_controls(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
    a = send_legacy(r, ["one@a.example"])
    b = send_legacy(r, ["two@b.example"])
    wait_event(r, a, "deferred")
    wait_event(r, b, "deferred")
    lst = qreq(r, "queue_list", msg("QueueList", select=msg("QueueSelect", domain="a.example")),
               "queue_list_reply")
    assert [m.message_id for m in lst.messages] == [a] and lst.matched == 1
    # hold: not tried any more
    act = qreq(r, "queue_action", msg("QueueAction", kind=0, select=msg("QueueSelect",
               message_ids=[a])), "queue_action_reply")
    assert act.affected == 1
    assert r.ctl("queue", "show", a)["state"] in ("active", "held")
    n = r.ctl("queue", "show", a)["recipients"][0]["attempts"]
    time.sleep(4)
    assert r.ctl("queue", "show", a)["recipients"][0]["attempts"] == n
    st = qreq(r, "queue_stats", msg("QueueStats"), "queue_stats_reply")
    assert {c.key: c.count for c in st.by_state}["held"] == 1
    # release + retry with the destination back: delivered
    r.ctl("sandbox", "fail", "--code", "0", "--seconds", "0")
    qreq(r, "queue_action", msg("QueueAction", kind=1, select=msg("QueueSelect",
         message_ids=[a])), "queue_action_reply")
    wait_event(r, a, "delivered", timeout=30)
    # delete b: gone without a report
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
    act = qreq(r, "queue_action", msg("QueueAction", kind=3, select=msg("QueueSelect",
               domain="b.example")), "queue_action_reply")
    assert act.affected == 1 and list(act.message_ids) == [b]
    wait_event(r, b, "deleted")
    st = qreq(r, "queue_stats", msg("QueueStats"), "queue_stats_reply")
    assert st.messages == 0
    # bounce c by operator: a report to the sender
    c = send_legacy(r, ["three@c.example"])
    wait_event(r, c, "deferred")
    qreq(r, "queue_action", msg("QueueAction", kind=4, select=msg("QueueSelect",
         message_ids=[c])), "queue_action_reply")
    ev = wait_event(r, c, "bounced")
    assert ev[0]["reply"]["code"] == 554
    wait_event(r, c, "dsn_queued")


def test_domain_suspend_and_resume(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    rep = qreq(r, "queue_domain_suspend", msg("QueueDomainSuspend", domain="Slow.Example",
               suspend=True), "queue_domain_suspend_reply")
    assert rep.suspended and rep.domain == "slow.example"
    mid = send_legacy(r, ["x@slow.example"])
    time.sleep(3)
    assert not [e for e in events(r, mid) if e["type"] in ("delivered", "deferred")]
    st = qreq(r, "queue_stats", msg("QueueStats"), "queue_stats_reply")
    assert [d for d in st.domains if d.domain == "slow.example"][0].suspended
    qreq(r, "queue_domain_suspend", msg("QueueDomainSuspend", domain="slow.example",
         suspend=False), "queue_domain_suspend_reply")
    wait_event(r, mid, "delivered", timeout=15)


def test_restart_recovers_deferred_messages(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
    ids = [send_legacy(r, ["r%d@example.org" % i]) for i in range(5)]
    for i in ids:
        wait_event(r, i, "deferred")
    r.kill("queue")
    r.ctl("sandbox", "fail", "--code", "0", "--seconds", "0")
    r.spawn("queue")
    for i in ids:
        wait_event(r, i, "delivered", timeout=30)
    assert len(r.maildir_files()) == 5
