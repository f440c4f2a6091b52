"""A full store never turns a 250 into a loss. The queue's LMDB map is
capped (map_max) or its state directory is a small tmpfs; messages of
about 200 KiB arrive while the sandbox refuses every connection, so
nothing leaves, until the queue cannot store the next one. That message
gets a temporary refusal at the end of data, never a 250; every message
that did get a 250 is on disk, reaches the sandbox exactly once when it
comes back, and then new mail is accepted again. The queue process stays
up throughout. Mail enters through the legacy port (no AUTH)."""
import contextlib
import os
import re
import smtplib
import subprocess
import time

import pytest

from harness import wait_for

MESSAGE_SIZE = 200 * 1024
MAX_MESSAGES = 60  # far more than either store can hold


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


# retries stay frequent while the sandbox fails and the destination is never
# held, so delivery resumes within seconds of the sandbox coming back
RETRIES = dict(retry_max_interval='"2s"', domain_hold_after=10000)


def quick_probes(text):
    """config_edit: router probes a down endpoint every second or two."""
    return text.replace("router = {\n", 'router = {\n  probe_base = "1s";\n  probe_max = "2s";\n',
                        1)


def chain(*edits):
    def edit(text):
        for e in edits:
            text = e(text)
        return text
    return edit


MAP_CAPPED = chain(queue_settings(map_size='"1M"', map_max='"2M"', **RETRIES), quick_probes)


def send(r, token, size=MESSAGE_SIZE):
    """One message of about size bytes; (code, text, message id or None) of the end of data."""
    line = "%-76s\r\n" % ("%s filler" % token)
    head = "Subject: %s\r\nX-Token: %s\r\n\r\n" % (token, token)
    body = (head + line * max(1, (size - len(head)) // len(line))).encode()
    with smtplib.SMTP("127.0.0.1", r.legacy, timeout=60) as s:
        s.ehlo()
        s.mail("app@example.test")
        code, text = s.rcpt("%s@example.org" % token)
        assert code == 250, text
        code, text = s.data(body)  # raises unless DATA itself got 354
    text = text.decode(errors="replace")
    m = re.search(r"queued as ([0-9a-v]{20})", text)
    return code, text, m.group(1) if m else None


def fill(r, prefix, size=MESSAGE_SIZE):
    """Send until the first refusal. Returns ({token: id} accepted, (token, code, text))."""
    accepted = {}
    for i in range(MAX_MESSAGES):
        token = "%s-%03d" % (prefix, i)
        code, text, mid = send(r, token, size)
        if code != 250:
            assert mid is None, text
            return accepted, (token, code, text)
        accepted[token] = mid
    raise AssertionError("%d messages of %d bytes accepted and the store is still not full"
                         % (MAX_MESSAGES, size))


def refused_ids(r):
    """Message ids whose commit ingress saw refused, from its log."""
    return re.findall(r"msg=([0-9a-v]{20}) event=commit_refused", r.log("ingress"))


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
        wait_for(have, timeout=timeout, interval=0.5,
                 what="%d messages in the sandbox" % len(tokens))
    except AssertionError:
        got = delivered(r)
        raise AssertionError("not delivered: %s; delivered more than once: %s" % (
            sorted(tokens - set(got))[:20], {t: n for t, n in got.items() if n > 1}))


def assert_queue_running(r):
    assert r.procs["queue-1"].poll() is None, "queue exited:\n" + r.log("queue")[-3000:]
    st = r.ctl("status")
    assert [s["up"] for s in st["services"] if s["service"] == "queue"] == [True]


def assert_stored(r, accepted):
    """Each accepted message is in the queue, whole, waiting for its next attempt."""
    for token, mid in accepted.items():
        shown = r.ctl("queue", "show", mid)
        assert shown["state"] == "active", shown
        assert shown["body_size"] >= MESSAGE_SIZE * 0.9, shown
        assert shown["recipients"][0]["state"] in ("queued", "deferred"), shown


def assert_not_stored(r, mid):
    res = r.ctl_run("queue", "show", mid)
    assert res.returncode == 1 and "not found" in res.stdout + res.stderr, (
        res.returncode, res.stdout, res.stderr)


def drain_and_check(r, accepted, refused_tokens):
    """Let the sandbox take what was accepted: each arrives once, no refused one ever."""
    r.ctl("sandbox", "fail", "--code", "0", "--seconds", "0")
    wait_delivered(r, accepted)
    time.sleep(3)  # a second copy, or a refused message, would arrive now
    got = delivered(r)
    assert {t: got[t] for t in accepted} == {t: 1 for t in accepted}, got
    assert not set(refused_tokens) & set(got), got


def accepts_again(r, prefix, count=3):
    again = {}
    for i in range(count):
        token = "%s-%d" % (prefix, i)
        code, text, mid = send(r, token)
        assert code == 250, "after room was made, %s got %d %s" % (token, code, text)
        again[token] = mid
    wait_delivered(r, again)
    assert {t: delivered(r)[t] for t in again} == {t: 1 for t in again}


# ---- the map reaches map_max ----

def test_map_full_refuses_with_452_and_loses_nothing(make_relay):
    r = make_relay(retry_base="1s", config_edit=MAP_CAPPED)
    r.start()
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
    accepted, (token, code, text) = fill(r, "map")
    assert accepted, "the very first message was refused: %d %s" % (code, text)
    assert (code, text.split()[0]) == (452, "4.3.1"), (code, text)
    log = r.log("queue")
    assert "event=store_grown" in log  # 1M became 2M before the store was full
    assert re.search(r"event=commit_failed msg=\w+ reason=store_full", log), log[-2000:]
    assert_queue_running(r)
    assert_stored(r, accepted)
    refused = refused_ids(r)
    assert len(refused) == 1, refused
    assert_not_stored(r, refused[0])

    # still full: the next one is refused the same way
    code2, text2, _ = send(r, "map-again")
    assert (code2, text2.split()[0]) == (452, "4.3.1"), (code2, text2)
    assert_queue_running(r)

    drain_and_check(r, accepted, [token, "map-again"])
    accepts_again(r, "map-after")
    assert_queue_running(r)


def test_map_full_to_the_last_page_recovers(make_relay):
    r = make_relay(retry_base="1s", config_edit=MAP_CAPPED)
    r.start()
    r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
    accepted, refusal = fill(r, "brim")
    refused_tokens = [refusal[0]]
    # smaller and smaller messages take what room is left
    for size in (50 * 1024, 8 * 1024, 1024, 200):
        more, refusal = fill(r, "brim%d" % size, size)
        assert (refusal[1], refusal[2].split()[0]) == (452, "4.3.1"), refusal
        accepted.update(more)
        refused_tokens.append(refusal[0])
    assert_queue_running(r)
    drain_and_check(r, accepted, refused_tokens)
    accepts_again(r, "brim-after")
    assert_queue_running(r)


# ---- the disk under the store is full ----

@contextlib.contextmanager
def small_tmpfs(path, size):
    """A tmpfs of size mounted on path, or the test skipped if mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path],
                             capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command to put the queue's state on a small tmpfs")
    if res.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (%s)" %
                    (res.stderr.strip() or "exit %d" % res.returncode))
    try:
        yield path
    finally:
        # lazily: the relay still has the store open until the fixture stops it
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def disk_full_relay(make_relay):
    r = make_relay(retry_base="1s", config_edit=chain(queue_settings(**RETRIES), quick_probes))
    return r, os.path.join(r.var, "state", "queue-1")  # relay.state_dir/queue-1


def test_disk_full_loses_nothing_and_recovers_when_space_returns(make_relay):
    r, qdir = disk_full_relay(make_relay)
    with small_tmpfs(qdir, "3m"):
        r.start()
        r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
        accepted, (token, code, text) = fill(r, "disk")
        assert accepted, "the very first message was refused: %d %s" % (code, text)
        # a temporary refusal: the client keeps the message and tries later
        assert 400 <= code < 500, (code, text)
        assert_queue_running(r)
        assert_stored(r, accepted)
        refused = refused_ids(r)
        assert len(refused) == 1, refused
        assert_not_stored(r, refused[0])
        code2, text2, _ = send(r, "disk-again")
        assert 400 <= code2 < 500, (code2, text2)

        # space returns: new mail is taken at once, before anything has left
        subprocess.run(["mount", "-o", "remount,size=20m", qdir], check=True, timeout=30)
        more = {}
        for i in range(3):
            t = "disk-room-%d" % i
            c, txt, mid = send(r, t)
            assert c == 250, "with space back, %s got %d %s" % (t, c, txt)
            more[t] = mid
        accepted.update(more)
        assert_stored(r, more)
        drain_and_check(r, accepted, [token, "disk-again"])
        accepts_again(r, "disk-after")
        assert_queue_running(r)


def test_disk_full_answers_452_4_3_1(make_relay):
    r, qdir = disk_full_relay(make_relay)
    with small_tmpfs(qdir, "3m"):
        r.start()
        r.ctl("sandbox", "fail", "--code", "421", "--seconds", "600")
        accepted, (token, code, text) = fill(r, "enospc")
        assert accepted
        assert_queue_running(r)
        assert (code, text.split()[0]) == (452, "4.3.1"), (code, text)
