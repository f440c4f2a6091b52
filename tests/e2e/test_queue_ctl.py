"""The operators' queue commands of sendarixctl against a running relay:
queue list with each condition, queue stats with a failing domain's last
error, hold / release / retry / delete / bounce by id and by condition,
suspend and resume, queue show with DSN options and the held flag, the
suppression list (an added entry stops delivery), and the queue gauges of
/metrics read with curl. Mail enters through the legacy port (tenant demo)
and, for a second tenant, through submission with STARTTLS and AUTH."""
import calendar
import json
import re
import socket
import subprocess
import time

from harness import submission_login, wait_for
from test_queue import chain, events, queue_conf, route_to, send_legacy, wait_event


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metrics_every(interval):
    """config_edit: events pings the services every interval."""
    def edit(text):
        return text.replace("events = {", 'events = {\n  metrics_interval = "%s";' % interval, 1)
    return edit


def send_submission(r, user, password, sender, rcpts):
    with submission_login(r, user, password) as s:
        s.mail(sender)
        for rc in rcpts:
            code, text = s.rcpt(rc)
            assert code == 250, text
        code, text = s.data(b"Subject: t\r\n\r\nhello\r\n")
        assert code == 250, text
        return re.search(r"queued as ([0-9a-v]{20})", text.decode()).group(1)


def listed(r, *args):
    """Message ids of `queue list ARGS`, in the order printed."""
    return [m["message_id"] for m in r.ctl("queue", "list", *args)["messages"]]


def attempts(r, msgid):
    return r.ctl("queue", "show", msgid)["recipients"][0]["attempts"]


def curl(r, path):
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}",
                          "http://127.0.0.1:%d%s" % (r.http, path)],
                         capture_output=True, text=True, timeout=10)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def gauge(body, name, **labels):
    """The value of one sample of /metrics, or None."""
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(want)), body, re.M)
    return float(m.group(1)) if m else None


def test_list_with_each_condition_and_show(make_relay):
    # the sandbox defers fail-450-* at RCPT; a minute between attempts: nothing moves on its
    # own while the test looks
    r = make_relay(retry_base="60s")
    r.start()
    r.add_demo_credential(user="acme-app", password="acme-password-1", tenant="acme",
                          domain="acme.test")
    a = send_legacy(r, ["fail-450-one@a.example"],
                    rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;One@a.example"])
    b = send_legacy(r, ["fail-450-two@b.example", "fail-450-three@a.example"])
    c = send_submission(r, "acme-app", "acme-password-1", "app@acme.test",
                        ["fail-450-four@c.example"])
    for m in (a, b, c):
        wait_event(r, m, "deferred")
    wait_event(r, b, "deferred", count=2)

    doc = r.ctl("queue", "list")
    assert [m["message_id"] for m in doc["messages"]] == [a, b, c]  # oldest first
    assert doc["matched"] == 3
    first = doc["messages"][0]
    assert first["instance"] == "1"
    assert first["mail_from"] == "app@example.test" and first["tenant"] == "demo"
    assert first["recipients"] == 1 and first["pending"] == 1
    assert first["state"] == "active"
    assert first["domains"] == ["a.example"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", first["received_at"])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", first["next_attempt"])
    assert "fail-450" in first["last_error"]  # the sandbox's reply at RCPT
    assert first["size"] > 0
    assert set(first) == {"instance", "message_id", "mail_from", "tenant", "received_at", "size",
                          "recipients", "pending", "state", "next_attempt", "last_error",
                          "domains"}

    assert listed(r, "--domain", "a.example") == [a, b]
    assert listed(r, "--domain", "C.EXAMPLE") == [c]
    assert listed(r, "--tenant", "acme") == [c]
    assert listed(r, "--tenant", "demo") == [a, b]
    assert listed(r, "--recipient", "FAIL-450-two@b.example") == [b]
    assert listed(r, "--recipient", "nobody@b.example") == []
    assert listed(r, "--state", "deferred") == [a, b, c]
    assert listed(r, "--older-than", "1h") == []
    time.sleep(2.2)
    assert listed(r, "--older-than", "2s") == [a, b, c]
    assert listed(r, "--domain", "a.example", "--tenant", "demo", "--older-than", "2s") == [a, b]
    # the limit cuts the list, "matched" still counts all (which one is listed is the queue's
    # choice: it does not pick the oldest)
    doc = r.ctl("queue", "list", "--limit", "1")
    assert len(doc["messages"]) == 1 and doc["messages"][0]["message_id"] in (a, b, c)
    assert doc["matched"] == 3
    doc = r.ctl("queue", "list", "--limit", "2", "--tenant", "demo")
    assert sorted(m["message_id"] for m in doc["messages"]) == sorted([a, b])

    # held, and the active ones without it
    assert r.ctl("queue", "hold", b)["affected"] == 1
    assert listed(r, "--state", "held") == [b]
    assert listed(r, "--state", "active") == [a, c]
    assert r.ctl("queue", "list", "--state", "held")["messages"][0]["state"] == "held"

    shown = r.ctl("queue", "show", b)
    assert shown["held"] is True and shown["state"] == "active"
    shown = r.ctl("queue", "show", a)
    assert shown["held"] is False
    rc = shown["recipients"][0]
    assert rc["notify"] == "SUCCESS,FAILURE"
    assert rc["orcpt"].lower() == "rfc822;one@a.example"
    assert rc["state"] == "deferred" and rc["attempts"] == 1
    text = r.ctl_run("queue", "show", b, json_out=False)
    assert text.returncode == 0 and "(held)" in text.stdout

    text = r.ctl_run("queue", "list", json_out=False)
    assert text.returncode == 0
    assert a in text.stdout and b in text.stdout and c in text.stdout
    assert "3 shown, 3 matched" in text.stdout

    # usage errors: exit 2, nothing asked
    for args in (["queue", "list", "--state", "done"], ["queue", "list", "--older-than", "soon"],
                 ["queue", "list", "--limit", "0"]):
        res = r.ctl_run(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert json.loads(res.stdout)["error"]


def test_stats_show_a_failing_domain_and_its_last_error(make_relay):
    r = make_relay(retry_base="1s", config_edit=chain(
        route_to(closed_port()), queue_conf(domain_hold_after=2, domain_hold_base='"30s"')))
    r.start()
    ids = [send_legacy(r, ["x%d@dead.example" % i]) for i in range(3)]

    def held():
        st = r.ctl("queue", "stats")
        d = [d for d in st["domains"] if d["domain"] == "dead.example"]
        return d and d[0]["held_until"] and st
    st = wait_for(held, timeout=30, what="dead.example held")
    d = [d for d in st["domains"] if d["domain"] == "dead.example"][0]
    assert d["pending"] == 3
    assert d["failures"] >= 2
    assert "4.4." in d["last_error"] and "refused" in d["last_error"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", d["last_error_at"])
    assert d["suspended"] is False
    assert set(d) == {"domain", "pending", "deferred", "last_error", "last_error_at",
                      "suspended", "held_until", "failures"}
    inst = st["instances"][0]
    assert inst["instance"] == "1" and inst["messages"] == 3
    assert sum(inst["by_state"].values()) >= 3
    assert inst["oldest_age_s"] >= 0 and inst["suppressed"] == 0
    assert st["total"]["messages"] == 3
    assert st["total"]["by_state"] == inst["by_state"]

    text = r.ctl_run("queue", "stats", json_out=False)
    assert text.returncode == 0
    assert re.search(r"^total: 3 messages", text.stdout, re.M)
    line = [l for l in text.stdout.splitlines() if l.startswith("dead.example")][0]
    assert "held until" in line and "refused" in line
    assert all(r.ctl("queue", "show", i)["state"] == "active" for i in ids)


def test_actions_by_id_and_by_condition(make_relay):
    # every recipient is deferred at RCPT by the sandbox; retries a minute apart
    r = make_relay(retry_base="60s")
    r.start()
    a = send_legacy(r, ["fail-450-one@a.example"])
    b = send_legacy(r, ["fail-450-two@b.example"])
    c = send_legacy(r, ["fail-450-three@c.example"])
    d = send_legacy(r, ["fail-450-four@d.example"])
    for m in (a, b, c, d):
        wait_event(r, m, "deferred")

    # an action that names no message is refused before anything is asked
    res = r.ctl_run("queue", "delete")
    assert res.returncode == 2 and "name the messages" in json.loads(res.stdout)["error"]
    res = r.ctl_run("queue", "hold", a, "--domain", "a.example")
    assert res.returncode == 2

    # hold by id: not tried any more, even when asked to retry everything
    doc = r.ctl("queue", "hold", a)
    assert doc == {"action": "hold", "affected": 1, "message_ids": [a],
                   "instances": [{"instance": "1", "affected": 1, "message_ids": [a]}]}
    assert r.ctl("queue", "hold", a)["affected"] == 0  # already held
    # hold by condition
    doc = r.ctl("queue", "hold", "--domain", "b.example")
    assert doc["affected"] == 1 and doc["message_ids"] == [b]
    assert sorted(listed(r, "--state", "held")) == sorted([a, b])

    # retry by condition: the waiting recipients go now, held ones do not
    n_a, n_c = attempts(r, a), attempts(r, c)
    doc = r.ctl("queue", "retry", "--state", "active")
    assert sorted(doc["message_ids"]) == sorted([c, d])
    wait_event(r, c, "deferred", count=2)
    assert attempts(r, c) == n_c + 1
    time.sleep(1)
    assert attempts(r, a) == n_a

    # release by condition, then by id; a released message is tried again
    doc = r.ctl("queue", "release", "--domain", "a.example")
    assert doc["message_ids"] == [a]
    assert r.ctl("queue", "show", a)["held"] is False
    r.ctl("queue", "retry", a)
    wait_event(r, a, "deferred", count=2)
    assert r.ctl("queue", "release", b)["affected"] == 1
    assert listed(r, "--state", "held") == []

    # delete by id: gone without a report
    doc = r.ctl("queue", "delete", c)
    assert doc["action"] == "delete" and doc["message_ids"] == [c]
    wait_event(r, c, "deleted")
    res = r.ctl_run("queue", "show", c)
    assert res.returncode == 1

    # bounce by condition: a report to the sender
    doc = r.ctl("queue", "bounce", "--recipient", "fail-450-four@d.example")
    assert doc["message_ids"] == [d]
    ev = wait_event(r, d, "bounced")
    assert ev[0]["reply"]["code"] == 554
    wait_event(r, d, "dsn_queued")

    # text output
    e = send_legacy(r, ["fail-450-five@e.example"])
    text = r.ctl_run("queue", "hold", e, json_out=False)
    assert text.returncode == 0 and "hold: 1 message" in text.stdout and e in text.stdout
    time.sleep(1.2)
    doc = r.ctl("queue", "delete", "--tenant", "demo", "--older-than", "1s")
    assert {a, b, e} <= set(doc["message_ids"])  # a bounce report on its way may be there too
    assert r.ctl("queue", "list")["matched"] == 0


def test_suspend_and_resume(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    doc = r.ctl("queue", "suspend", "Slow.Example")
    assert doc["domain"] == "slow.example" and doc["suspended"] is True
    assert doc["until"] is None
    mid = send_legacy(r, ["x@slow.example"])
    time.sleep(3)
    assert not [e for e in events(r, mid) if e["type"] in ("delivered", "deferred")]
    dom = [d for d in r.ctl("queue", "stats")["domains"] if d["domain"] == "slow.example"][0]
    assert dom["suspended"] is True and dom["pending"] == 1
    doc = r.ctl("queue", "resume", "slow.example")
    assert doc["suspended"] is False
    wait_event(r, mid, "delivered", timeout=15)

    # for a while: the end is given
    doc = r.ctl("queue", "suspend", "later.example", "--for", "2h")
    until = doc["until"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", until)
    t = calendar.timegm(time.strptime(until, "%Y-%m-%dT%H:%M:%SZ"))
    assert 7100 < t - time.time() < 7300
    text = r.ctl_run("queue", "resume", "later.example", json_out=False)
    assert text.returncode == 0 and "resumed" in text.stdout


def test_suppression_list_stops_delivery(make_relay):
    r = make_relay(retry_base="1s")
    r.start()
    doc = r.ctl("suppress", "add", "Blocked@Example.org", "--tenant", "demo", "--reason",
                "complaint", "--ttl", "1d")
    e = doc["suppression"]
    assert e["tenant"] == "demo" and e["address"].lower() == "blocked@example.org"
    assert e["reason"] == "complaint" and e["reply"] is None
    assert e["expires_at"] is not None
    r.ctl("suppress", "add", "other@example.org", "--tenant", "acme")

    doc = r.ctl("suppress", "check", "blocked@example.org", "--tenant", "demo")
    assert doc["suppressed"] is True and doc["entry"]["reason"] == "complaint"
    doc = r.ctl("suppress", "check", "blocked@example.org", "--tenant", "acme")
    assert doc == {"suppressed": False, "entry": None}
    lst = r.ctl("suppress", "list")["suppressions"]
    assert [(x["tenant"], x["address"].lower()) for x in lst] == [
        ("acme", "other@example.org"), ("demo", "blocked@example.org")]
    assert [x["tenant"] for x in r.ctl("suppress", "list", "--tenant", "acme")["suppressions"]] \
        == ["acme"]
    assert r.ctl("queue", "stats")["instances"][0]["suppressed"] == 2

    # the suppressed address gets nothing; the other recipient does
    mid = send_legacy(r, ["blocked@example.org", "fine@example.org"])
    ev = wait_event(r, mid, "suppressed")
    assert ev[0]["recipient"].lower() == "blocked@example.org"
    wait_event(r, mid, "delivered")
    time.sleep(1)
    delivered = [x["recipient"] for x in events(r, mid) if x["type"] == "delivered"]
    assert delivered == ["fine@example.org"]

    # removed: mail flows again
    doc = r.ctl("suppress", "remove", "blocked@example.org", "--tenant", "demo")
    assert doc["removed"] is True
    assert r.ctl("suppress", "check", "blocked@example.org", "--tenant", "demo")["suppressed"] \
        is False
    res = r.ctl_run("suppress", "remove", "blocked@example.org", "--tenant", "demo")
    assert res.returncode == 1 and "not suppressed" in json.loads(res.stdout)["error"]
    again = send_legacy(r, ["blocked@example.org"])
    wait_event(r, again, "delivered")

    text = r.ctl_run("suppress", "check", "other@example.org", "--tenant", "acme",
                     json_out=False)
    assert text.returncode == 0 and "is suppressed for tenant acme (operator)" in text.stdout
    res = r.ctl_run("suppress", "add", "not-an-address", "--tenant", "demo")
    assert res.returncode == 2


def test_metrics_show_queue_gauges_and_liveness(make_relay):
    r = make_relay(retry_base="60s", config_edit=metrics_every("1s"))
    r.start()
    ids = [send_legacy(r, ["fail-450-m%d@example.org" % i]) for i in range(3)]
    for m in ids:
        wait_event(r, m, "deferred")
    r.ctl("queue", "hold", ids[0])

    def scraped():
        code, body = curl(r, "/metrics")
        assert code == 200
        ok = (gauge(body, "sendarix_queue_messages", instance="1") == 3 and
              gauge(body, "sendarix_queue_recipients", instance="1", state="held") == 1)
        return ok and body
    body = wait_for(scraped, timeout=15, what="queue gauges in /metrics")
    for svc in ("events", "auth", "queue", "router", "delivery", "sandbox", "ingress"):
        assert gauge(body, "sendarix_up", service=svc, instance="1") == 1, svc
        # every service says what its heap holds live (a few MiB here; RSS adds the maps)
        heap = gauge(body, "sendarix_service_stat", service=svc, instance="1",
                     stat="heap_in_use_bytes")
        assert heap is not None and 0 < heap < 64 << 20, (svc, heap)
    assert gauge(body, "sendarix_queue_recipients", instance="1", state="deferred") == 2
    assert gauge(body, "sendarix_queue_scheduled", instance="1") is not None
    assert gauge(body, "sendarix_queue_inflight", instance="1") == 0
    assert gauge(body, "sendarix_queue_oldest_age_seconds", instance="1") >= 0
    assert gauge(body, "sendarix_service_stat", service="queue", instance="1",
                 stat="accepted") == 3
    assert gauge(body, "sendarix_service_stat", service="events", instance="1",
                 stat="events_stored") > 0
    assert "# TYPE sendarix_queue_oldest_age_seconds gauge" in body
    # the oldest message ages
    time.sleep(2.5)

    def older():
        age = gauge(curl(r, "/metrics")[1], "sendarix_queue_oldest_age_seconds", instance="1")
        return age is not None and age >= 2 and age
    wait_for(older, timeout=10, what="the oldest age to grow")

    # a service that stops is down at the next ping, and its queue gauges go
    r.kill("sandbox")
    r.kill("queue")

    def down():
        body = curl(r, "/metrics")[1]
        return (gauge(body, "sendarix_up", service="sandbox", instance="1") == 0 and
                gauge(body, "sendarix_up", service="queue", instance="1") == 0 and body)
    body = wait_for(down, timeout=15, what="sandbox and queue down in /metrics")
    assert gauge(body, "sendarix_queue_messages", instance="1") is None
    assert gauge(body, "sendarix_up", service="auth", instance="1") == 1
