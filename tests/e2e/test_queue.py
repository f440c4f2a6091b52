"""The queue's promise under real failures: retries and greylisting waits,
holding a failing domain, bounces with delivery status notifications to the
sender, the suppression list, expiry, and the operators' controls (through
sendarixctl). Mail enters through the legacy port (allowlisted loopback, no
AUTH) so these tests need nothing but the queue's own behaviour."""
import email
import os
import re
import signal
import smtplib
import socket
import threading
import time

import pytest

from fakemx import FakeMx
from harness import wait_for


def section_conf(name, **settings):
    """config_edit that sets settings of one section (replacing the template's)."""
    def edit(text):
        head, rest = text.split("\n%s = {\n" % name, 1)
        section, tail = rest.split("\n};", 1)
        section += "\n"
        for k, v in settings.items():
            line = "  %s = %s;\n" % (k, v)
            if re.search(r"^  %s = " % k, section, re.M):
                section = re.sub(r"^  %s = .*\n" % k, line, section, flags=re.M)
            else:
                section = line + section
        return head + "\n%s = {\n" % name + section.rstrip("\n") + "\n};" + tail
    return edit


def queue_conf(**settings):
    """config_edit that sets settings of the queue section."""
    return section_conf("queue", **settings)


def chain(*edits):
    def edit(text):
        for e in edits:
            text = e(text)
        return text
    return edit


# For tests that turn the sandbox's fail mode on and off. Router holds jobs for
# a route whose endpoints are all down until a probe is due: probing often lets
# every attempt reach the failing sandbox when the queue makes it. Delivery
# keeps connections for the next message, which the fail mode (new connections
# only) would not touch: keep none.
SANDBOX_DRILL = chain(section_conf("router", probe_base='"100ms"', probe_max='"200ms"'),
                      section_conf("delivery", idle_timeout='"0s"'))


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


def suppress_check(r, address, tenant="demo"):
    """The suppression entry of (tenant, address), or None."""
    doc = r.ctl("suppress", "check", address, "--tenant", tenant)
    assert doc["suppressed"] is (doc["entry"] is not None)
    return doc["entry"]


def domain_stats(r, domain):
    found = [d for d in r.ctl("queue", "stats")["domains"] if d["domain"] == domain]
    return found[0] if found else None


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
    entry = suppress_check(r, "fail-550-gone@example.org")
    assert entry and entry["reason"] == "hard-bounce"
    assert entry["reply"]["enhanced"] == "5.1.1"

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


def test_greylisting_retried_at_the_asked_interval(make_relay):
    seen = set()

    def greylist(ip, rcpt):
        """each new recipient is greylisted once, the reply naming a wait"""
        if rcpt in seen:
            return None
        seen.add(rcpt)
        return (451, "4.7.1 Greylisted, please try again in 3 seconds")

    mx = FakeMx(greylist)
    try:
        # the normal backoff would wait a minute: the reply asks for 3 s
        r = make_relay(retry_base="60s", config_edit=route_to(mx.port))
        r.start()
        mid = send_legacy(r, ["grey@example.org"])
        wait_event(r, mid, "delivered", timeout=30)
        tries = [t for _, a, t, _ in mx.rcpts if a == "grey@example.org"]
        assert len(tries) == 2
        assert 2.5 <= tries[1] - tries[0] <= 10, tries
    finally:
        mx.close()


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
        d = domain_stats(r, "dead.example")
        return d and d["held_until"] and d
    d = wait_for(held, timeout=30, what="dead.example held")
    assert d["failures"] >= 2
    assert "4.4." in d["last_error"] and "refused" in d["last_error"]
    assert d["pending"] == 3
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
    entry = suppress_check(r, "fail-450-full@example.org")
    assert entry and entry["reason"] == "soft-bounce"


def test_expiry_bounces_with_5_4_7(make_relay):
    r = make_relay(retry_base="1s", config_edit=chain(SANDBOX_DRILL, queue_conf(max_age='"3s"')))
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
    r = make_relay(retry_base="1s", config_edit=SANDBOX_DRILL)
    r.start()
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
    a = send_legacy(r, ["one@a.example"])
    b = send_legacy(r, ["two@b.example"])
    wait_event(r, a, "deferred")
    wait_event(r, b, "deferred")
    lst = r.ctl("queue", "list", "--domain", "a.example")
    assert [m["message_id"] for m in lst["messages"]] == [a] and lst["matched"] == 1
    # hold: not tried any more
    act = r.ctl("queue", "hold", a)
    assert act["affected"] == 1
    assert r.ctl("queue", "show", a)["state"] in ("active", "held")
    assert r.ctl("queue", "show", a)["held"] is True
    n = r.ctl("queue", "show", a)["recipients"][0]["attempts"]
    time.sleep(4)
    assert r.ctl("queue", "show", a)["recipients"][0]["attempts"] == n
    st = r.ctl("queue", "stats")
    assert st["instances"][0]["by_state"]["held"] == 1
    # release + retry with the destination back: delivered
    r.ctl("sandbox", "fail", "--code", "0", "--seconds", "0")
    r.ctl("queue", "release", a)
    wait_event(r, a, "delivered", timeout=30)
    # delete b: gone without a report
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
    act = r.ctl("queue", "delete", "--domain", "b.example")
    assert act["affected"] == 1 and act["message_ids"] == [b]
    wait_event(r, b, "deleted")
    st = r.ctl("queue", "stats")
    assert st["total"]["messages"] == 0
    # bounce c by operator: a report to the sender
    c = send_legacy(r, ["three@c.example"])
    wait_event(r, c, "deferred")
    r.ctl("queue", "bounce", c)
    ev = wait_event(r, c, "bounced")
    assert ev[0]["reply"]["code"] == 554
    wait_event(r, c, "dsn_queued")


def test_domain_suspend_and_resume(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    rep = r.ctl("queue", "suspend", "Slow.Example")
    assert rep["suspended"] and rep["domain"] == "slow.example"
    mid = send_legacy(r, ["x@slow.example"])
    time.sleep(3)
    assert not [e for e in events(r, mid) if e["type"] in ("delivered", "deferred")]
    assert domain_stats(r, "slow.example")["suspended"]
    r.ctl("queue", "resume", "slow.example")
    wait_event(r, mid, "delivered", timeout=15)


def test_restart_recovers_deferred_messages(make_relay):
    r = make_relay(retry_base="1s", config_edit=SANDBOX_DRILL)
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


def test_held_outcomes_ride_with_the_next_message_and_are_written_at_a_stop(make_relay):
    """An outcome with no new message to share its synced write waits for one
    (results_hold); a graceful stop writes it rather than deliver it twice."""
    r = make_relay(config_edit=queue_conf(results_hold='"60s"'))
    r.start()
    first = send_legacy(r, ["one@example.org"])
    wait_for(lambda: len(r.maildir_files()) == 1, timeout=20, what="the first delivery")
    time.sleep(1)  # its outcome has reached queue and waits there
    assert r.ctl("queue", "show", first)["state"] == "active"
    second = send_legacy(r, ["two@example.org"])
    wait_for(lambda: r.ctl("queue", "show", first)["state"] == "done", timeout=5,
             what="the first outcome written with the second message")
    wait_for(lambda: len(r.maildir_files()) == 2, timeout=20, what="the second delivery")
    time.sleep(1)
    assert r.ctl("queue", "show", second)["state"] == "active"
    r.kill("queue", sig=signal.SIGTERM)
    assert re.search(r"event=done msg=%s" % second, r.log("queue-1")), r.log("queue-1")
    r.spawn("queue")
    r.wait_up(["queue"])
    assert r.ctl("queue", "show", second)["state"] == "done"
    time.sleep(2)  # a message recovered as active would go out again by now
    assert len(r.maildir_files()) == 2



def test_bodies_arrive_whole_when_dispatch_falls_behind(make_relay):
    """Queue keeps a new message's body from its commit for the message's
    first job, for up to 256 messages; older ones are read back from the
    store. With one job out at a time and the destination holding it, 300
    messages wait, so both happen: every body arrives intact, once."""
    gate = threading.Event()
    mx = FakeMx(data_gate=gate)
    try:
        r = make_relay(config_edit=chain(queue_conf(max_inflight="1"), route_to(mx.port)))
        r.start()
        bodies = {}
        with smtplib.SMTP("127.0.0.1", r.legacy, timeout=30) as s:
            for i in range(300):
                token = "kept-%03d" % i
                line = "%s line %%d of a body that differs per message\r\n" % token
                text = "".join(line % n for n in range(3 if i % 3 else 3 + i * 7))
                body = "X-Token: %s\r\nSubject: %s\r\n\r\n%s" % (token, token, text)
                assert s.sendmail("app@example.test", ["kept@example.org"], body) == {}
                bodies[token] = body.encode()
        assert mx.bodies == []  # the first is still held at its dot
        gate.set()
        wait_for(lambda: len(mx.bodies) >= 300, timeout=120, what="300 deliveries")
        got = {}
        for data in mx.bodies:
            token = re.search(rb"X-Token: (kept-\d+)", data).group(1).decode()
            assert token not in got, "%s delivered twice" % token
            got[token] = data[data.index(b"X-Token: "):]
        assert set(got) == set(bodies)
        for token, body in bodies.items():
            assert got[token] == body, token
    finally:
        mx.close()


def queue_stats(r):
    return {s["service"]: s for s in r.ctl("status", check=False)["services"]}["queue"]["stats"]


def test_bodies_out_at_routers_are_bounded_in_bytes(make_relay):
    """Every job out at a router holds a copy of its body until delivery
    answers: max_inflight_bytes bounds them as max_inflight bounds
    messages. With 1 MiB and a destination that holds each message at its
    dot, 400 KiB messages go three at a time (the third starts below the
    budget), the rest wait, and all arrive once the destination answers. A
    message larger than the whole budget still goes, and the next waits
    until it is answered."""
    gate = threading.Event()
    mx = FakeMx(data_gate=gate)
    try:
        r = make_relay(config_edit=chain(queue_conf(max_inflight_bytes='"1M"'),
                                         route_to(mx.port)))
        r.start()
        text = "".join("line %05d of a large body, the same in every message\r\n" % i
                       for i in range(8000))  # 400 KiB
        for i in range(5):
            send_legacy(r, ["big%d@example.org" % i],
                        body=("Subject: big %d\r\n\r\n%s" % (i, text)).encode())
        wait_for(lambda: queue_stats(r)["inflight"] == "3", timeout=20,
                 what="three messages out at the router")
        wait_for(lambda: mx.active == 3, timeout=20, what="three messages at the destination")
        time.sleep(1)  # and no fourth while none is answered
        stats = queue_stats(r)
        assert stats["inflight"] == "3", stats
        assert 3 * 400000 < int(stats["inflight_bytes"]) < 4 * 400000, stats
        assert len(mx.bodies) == 0 and mx.max_active == 3
        gate.set()
        wait_for(lambda: len(mx.bodies) == 5, timeout=30, what="five deliveries")
        wait_for(lambda: queue_stats(r)["inflight_bytes"] == "0", timeout=10,
                 what="nothing left out at the router")
        assert sorted(re.search(rb"Subject: big (\d)", b).group(1) for b in mx.bodies) == \
            [b"0", b"1", b"2", b"3", b"4"]

        gate.clear()
        send_legacy(r, ["huge@example.org"],
                    body=("Subject: huge\r\n\r\n%s" % (text * 4)).encode())
        send_legacy(r, ["small@example.org"])
        wait_for(lambda: mx.active == 1, timeout=20, what="the 1.6 MB message at the destination")
        time.sleep(1)
        stats = queue_stats(r)
        assert stats["inflight"] == "1" and int(stats["inflight_bytes"]) > 1600000, stats
        gate.set()
        wait_for(lambda: len(mx.bodies) == 7, timeout=30, what="both delivered")
        assert b"Subject: huge" in mx.bodies[5] and len(mx.bodies[5]) > 1600000
    finally:
        gate.set()
        mx.close()


def test_queue_waits_quietly_while_routers_hold_all_they_may(make_relay):
    """With max_inflight reached and more messages due, queue waits for a
    result instead of looking again and again: its CPU time stays near
    zero while the destination holds the one message out."""
    gate = threading.Event()
    mx = FakeMx(data_gate=gate)
    try:
        r = make_relay(config_edit=chain(queue_conf(max_inflight="1"), route_to(mx.port)))
        r.start()
        for i in range(3):
            send_legacy(r, ["wait%d@example.org" % i])
        wait_for(lambda: mx.active == 1, timeout=20, what="the first message held")
        pid = r.procs["queue-1"].pid

        def cpu_s():
            f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu_s()
        time.sleep(3)
        spent = cpu_s() - before
        assert spent < 0.5, "queue used %.2f s of CPU in 3 s while waiting" % spent
        gate.set()
        wait_for(lambda: len(mx.bodies) == 3, timeout=30, what="three deliveries")
    finally:
        gate.set()
        mx.close()
