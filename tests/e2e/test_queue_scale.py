"""Several queue instances side by side. bus.queue lists three endpoints and
three sendarix-queue processes run, each with its own LMDB store under
state/queue-N. Ingress picks an instance per message, so new mail spreads
over all of them; when one is killed with SIGKILL, new mail goes to the
others and nothing is refused, and the messages the dead instance held
stay on its disk until it comes back, then go out once each. Mail enters
through the legacy port (allowlisted loopback, no AUTH)."""
import re
import smtplib
import time

from harness import wait_for

INSTANCES = (1, 2, 3)


def three_queues(text):
    """config_edit: bus.queue lists queue-1, queue-2 and queue-3."""
    def repl(m):
        return "queue = [ %s ];" % ", ".join(
            '"%squeue-%d.sock"' % (m.group(1), i) for i in INSTANCES)
    out, n = re.subn(r'^  queue = \[ "(ipc://[^"]*)queue-1\.sock" \];', repl, text, flags=re.M)
    assert n == 1, "the template's bus.queue line was not found"
    return out


def queue_settings(**settings):
    """config_edit: set settings of the queue section, replacing the template's."""
    def edit(text):
        head, rest = text.split("\nqueue = {\n", 1)
        section, tail = rest.split("};", 1)
        for k, v in settings.items():
            line = "  %s = %s;\n" % (k, v)
            section, n = re.subn(r"^  %s = .*\n" % k, line, section, flags=re.M)
            if n == 0:
                section = line + section
        return head + "\nqueue = {\n" + section + "};" + tail
    return edit


def quick_probes(text):
    """config_edit: router probes a down endpoint every second or two."""
    return text.replace("router = {\n", 'router = {\n  probe_base = "1s";\n  probe_max = "2s";\n',
                        1)


def scale_config(text):
    # retries and probes stay frequent while the sandbox fails, and the
    # failing destination is never held, so recovery is a matter of seconds
    text = queue_settings(retry_max_interval='"2s"', domain_hold_after=10000)(three_queues(text))
    return quick_probes(text)


def start_three(r):
    r.start(wait=False)
    for i in INSTANCES[1:]:
        r.spawn("queue", instance=i)
    r.wait_up()
    wait_queues_up(r, INSTANCES)


def wait_queues_up(r, instances):
    def up():
        st = r.ctl("status", check=False)
        if not isinstance(st, dict):
            return False
        q = {int(s["instance"]): s["up"] for s in st.get("services", [])
             if s["service"] == "queue"}
        return all(q.get(i) for i in instances) and q
    wait_for(up, timeout=20, what="queue instances %s up" % (instances,))


def send(r, token):
    """One message through the legacy port; returns (code, text, message id or None)."""
    body = ("Subject: %s\r\nX-Token: %s\r\n\r\n%s\r\n" % (token, token, token)).encode()
    with smtplib.SMTP("127.0.0.1", r.legacy, timeout=40) as s:
        s.ehlo()
        s.mail("app@example.test")
        code, text = s.rcpt("%s@example.org" % token)
        assert code == 250, text
        code, text = s.data(body)
    text = text.decode(errors="replace")
    m = re.search(r"queued as ([0-9a-v]{20})", text)
    return code, text, m.group(1) if m else None


def send_all(r, prefix, n):
    """Send n messages; every one must get a 250. Returns {token: message id}."""
    out = {}
    for i in range(n):
        token = "%s-%03d" % (prefix, i)
        code, text, mid = send(r, token)
        assert code == 250 and mid, "%s got %d %s" % (token, code, text)
        out[token] = mid
    return out


def holders(r):
    """{message id: [instances whose log says it queued it]}."""
    out = {}
    for i in INSTANCES:
        for mid in re.findall(r"event=queued msg=([0-9a-v]{20})", r.log("queue-%d" % i)):
            out.setdefault(mid, []).append(i)
    return out


def instance_of(r, ids):
    """{message id: the one instance that queued it}; fails if none or several did."""
    # queue answers the commit before it writes its log line: give the lines a moment
    ids = list(ids)
    try:
        wait_for(lambda: all(m in holders(r) for m in ids), timeout=10, what="queued lines")
    except AssertionError:
        pass  # reported below, message by message
    h = holders(r)
    out = {}
    for mid in ids:
        assert len(h.get(mid, [])) == 1, "message %s queued by instances %s" % (
            mid, h.get(mid, []))
        out[mid] = h[mid][0]
    return out


def delivered(r):
    """{token: number of copies in the sandbox}."""
    counts = {}
    for _, data in r.maildir_files():
        m = re.search(rb"X-Token: ([a-z0-9-]+)", data)
        if m:
            t = m.group(1).decode()
            counts[t] = counts.get(t, 0) + 1
    return counts


def wait_delivered(r, tokens, timeout=90):
    tokens = set(tokens)

    def have():
        got = delivered(r)
        return tokens <= set(got) and got
    try:
        return wait_for(have, timeout=timeout, interval=0.5,
                        what="%d messages in the sandbox" % len(tokens))
    except AssertionError:
        missing = sorted(tokens - set(delivered(r)))
        raise AssertionError("not delivered: %s" % missing[:20])


def queue_stats(r):
    st = r.ctl("status")
    return {int(s["instance"]): s.get("stats", {}) for s in st["services"]
            if s["service"] == "queue" and s["up"]}


def test_new_messages_spread_over_every_instance(make_relay):
    r = make_relay(retry_base="1s", config_edit=scale_config)
    start_three(r)
    sent = send_all(r, "spread", 60)
    where = instance_of(r, sent.values())
    per = {i: sum(1 for v in where.values() if v == i) for i in INSTANCES}
    assert all(per[i] > 0 for i in INSTANCES), per
    # each instance counts what it took, and only that
    stats = queue_stats(r)
    assert {i: int(stats[i]["accepted"]) for i in INSTANCES} == per

    got = wait_delivered(r, sent)
    time.sleep(1)  # anything still on its way
    got = delivered(r)
    assert {t: got.get(t) for t in sent} == {t: 1 for t in sent}
    # `queue show` finds each message wherever it is kept, finished
    for token, mid in list(sent.items())[::7]:
        shown = r.ctl("queue", "show", mid)
        assert shown["message"]["message_id"] == mid
        assert shown["state"] == "done", shown
        assert shown["recipients"][0]["address"] == "%s@example.org" % token
        assert shown["recipients"][0]["state"] == "delivered", shown


def test_killed_instance_keeps_its_mail_and_the_others_take_new(make_relay):
    r = make_relay(retry_base="1s", config_edit=scale_config)
    start_three(r)
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")

    # a first batch, spread over all three and left deferred by the sandbox
    first = send_all(r, "before", 30)
    where = instance_of(r, first.values())
    assert {where[m] for m in first.values()} == set(INSTANCES), where
    on_2 = {t: m for t, m in first.items() if where[m] == 2}

    def all_held_back():
        # each went out to router at least once and came back undelivered
        # (tried and deferred, or not tried while the endpoint is down)
        for mid in first.values():
            if "event=dispatched msg=%s " % mid not in r.log("queue-%d" % where[mid]):
                return False
            rc = r.ctl("queue", "show", mid)["recipients"][0]
            if rc["state"] not in ("queued", "deferred"):
                return False
        return True
    wait_for(all_held_back, timeout=30, interval=0.5, what="the first batch dispatched and back")
    assert not delivered(r)

    r.kill("queue", instance=2)
    assert r.procs["queue-2"].returncode == -9

    # with queue-2 gone, every new message is still accepted, by 1 or 3
    second = send_all(r, "during", 30)
    where2 = instance_of(r, second.values())
    assert set(where2.values()) == {1, 3}, where2
    # the message that picked queue-2 first found it gone only at its commit,
    # and the same body went to another instance
    assert re.search(r"event=queue_failover from=\S*queue-2\.sock", r.log("ingress")), \
        r.log("ingress")[-2000:]

    # the destination comes back: everything but queue-2's mail goes out
    r.ctl("sandbox", "fail", "--code", "0", "--seconds", "0")
    others = [t for t, m in first.items() if where[m] != 2] + list(second)
    wait_delivered(r, others)
    time.sleep(2)
    got = delivered(r)
    assert not set(on_2) & set(got), "queue-2 is down, yet %s arrived" % sorted(
        set(on_2) & set(got))

    # queue-2 restarts from its own store and delivers what it held
    r.spawn("queue", instance=2)
    wait_queues_up(r, INSTANCES)
    assert "event=recovered active=%d " % len(on_2) in r.log("queue-2"), r.log("queue-2")[-2000:]
    wait_delivered(r, on_2)
    time.sleep(2)  # a second copy would arrive now
    got = delivered(r)
    accepted = set(first) | set(second)
    assert {t: got.get(t) for t in accepted} == {t: 1 for t in accepted}
    assert set(got) == accepted
    for mid in on_2.values():
        shown = r.ctl("queue", "show", mid)
        assert shown["state"] == "done" and shown["recipients"][0]["state"] == "delivered"
