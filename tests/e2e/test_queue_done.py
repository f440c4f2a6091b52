"""Finished messages: out of queue's live database (in batches, shortly
after they finish), shown for done_retention, then swept, however many
finished; and finished records left in the live database by a crash or an
older store, moved over at start."""
import os
import re
import signal
import smtplib
import time

import lmdb

from harness import wait_for
from test_queue import queue_conf, send_legacy


def store_path(r):
    return os.path.join(r.var, "state", "queue-1")


def counts(r, names=("msg", "done", "done_at", "body")):
    """Entries of queue's databases, read beside the running queue."""
    env = lmdb.open(store_path(r), readonly=True, max_dbs=16, subdir=True)
    try:
        with env.begin() as txn:
            return {n: txn.stat(env.open_db(n.encode(), txn=txn, create=False))["entries"]
                    for n in names}
    finally:
        env.close()


def send_many(r, n):
    """n messages over one session; their ids, in order."""
    ids = []
    with smtplib.SMTP("127.0.0.1", r.legacy, timeout=30) as s:
        s.ehlo()
        for i in range(n):
            s.mail("app@example.test")
            s.rcpt("rcpt%d@example.org" % i)
            code, text = s.data(b"Subject: %d\r\n\r\nhello\r\n" % i)
            assert code == 250, text
            ids.append(re.search(r"queued as ([0-9a-v]{20})", text.decode()).group(1))
    return ids


def shown(r, msgid):
    out = r.ctl_run("queue", "show", msgid)
    return out.returncode == 0


def restart_queue(r):
    r.kill("queue", sig=signal.SIGTERM)
    r.spawn("queue")
    r.wait_up(["queue"])


def test_finished_messages_leave_the_live_store_and_are_swept_after_retention(make_relay):
    retention = 30  # seconds: room for sending and delivering all of them first
    r = make_relay(config_edit=queue_conf(done_retention='"%ds"' % retention))
    r.start()
    n = 1200  # more than one sweep's batch of 1,000
    ids = send_many(r, n)
    wait_for(lambda: len(r.maildir_files()) == n, timeout=120, what="every delivery")
    wait_for(lambda: r.ctl("queue", "show", ids[-1])["state"] == "done", timeout=20,
             what="the last message done")
    all_done = time.monotonic()
    # nothing finished stays in the live database (after its batch's move,
    # done_move_delay, 1 s); the finished are kept apart
    expected = {"msg": 0, "done": n, "done_at": n, "body": 0}
    wait_for(lambda: counts(r) == expected, timeout=10, what="every record moved to done")

    # a restart reads only the live ones, and still shows the finished
    restart_queue(r)
    assert re.search(r"event=recovered active=0 held=0", r.log("queue-1")), r.log("queue-1")
    assert r.ctl("queue", "show", ids[0])["state"] == "done"
    time.sleep(1)
    assert len(r.maildir_files()) == n

    # stopped until all are past the retention (so no earlier sweep takes
    # any), queue's first sweep removes every one, batch after batch, rather
    # than one batch per sweep interval (10 s)
    r.kill("queue", sig=signal.SIGTERM)
    time.sleep(max(0.0, all_done + retention + 1 - time.monotonic()))
    r.spawn("queue")
    r.wait_up(["queue"])
    wait_for(lambda: not shown(r, ids[-1]) and not shown(r, ids[0]), timeout=4,
             what="every message swept")
    assert counts(r) == {"msg": 0, "done": 0, "done_at": 0, "body": 0}


def test_just_finished_records_wait_in_msg_and_a_stop_or_a_crash_loses_none(make_relay):
    r = make_relay(config_edit=queue_conf(done_move_delay='"60s"'))
    r.start()
    first = send_many(r, 3)
    wait_for(lambda: all(r.ctl("queue", "show", i)["state"] == "done" for i in first),
             timeout=20, what="three messages done")
    # finished, bodies gone, records still in "msg" until their batch
    assert counts(r) == {"msg": 3, "done": 0, "done_at": 0, "body": 0}

    # a graceful stop moves what is pending
    r.kill("queue", sig=signal.SIGTERM)
    assert counts(r) == {"msg": 0, "done": 3, "done_at": 3, "body": 0}
    r.spawn("queue")
    r.wait_up(["queue"])
    assert "event=done_moved" not in r.log("queue-1")

    # a crash leaves them in "msg"; the start moves them
    # (ingress may not have reconnected yet: the commits wait for it)
    second = [send_legacy(r, ["again%d@example.org" % i]) for i in range(2)]
    wait_for(lambda: all(r.ctl("queue", "show", i)["state"] == "done" for i in second),
             timeout=20, what="two more messages done")
    assert counts(r)["msg"] == 2
    r.kill("queue", sig=signal.SIGKILL)
    r.spawn("queue")
    r.wait_up(["queue"])
    assert re.search(r"event=done_moved messages=2", r.log("queue-1")), r.log("queue-1")
    assert re.search(r"event=recovered active=0 held=0", r.log("queue-1")), r.log("queue-1")
    assert counts(r) == {"msg": 0, "done": 5, "done_at": 5, "body": 0}
    for i in first + second:
        assert r.ctl("queue", "show", i)["state"] == "done"
    time.sleep(1)
    assert len(r.maildir_files()) == 5


def test_finished_records_of_an_older_store_are_moved_at_start(make_relay):
    r = make_relay()
    r.start()
    ids = [send_legacy(r, ["m%d@example.org" % i]) for i in range(3)]
    wait_for(lambda: all(r.ctl("queue", "show", i)["state"] == "done" for i in ids), timeout=20,
             what="three messages done")
    r.kill("queue", sig=signal.SIGTERM)

    # the older layout: finished records in "msg", no "done_at"
    env = lmdb.open(store_path(r), max_dbs=16, subdir=True, map_size=1 << 30)
    with env.begin(write=True) as txn:
        msg = env.open_db(b"msg", txn=txn)
        done = env.open_db(b"done", txn=txn)
        done_at = env.open_db(b"done_at", txn=txn)
        for key, val in list(txn.cursor(db=done)):
            txn.put(key, val, db=msg)
        txn.drop(done, delete=False)
        txn.drop(done_at, delete=False)
    env.close()
    assert counts(r) == {"msg": 3, "done": 0, "done_at": 0, "body": 0}

    r.spawn("queue")
    r.wait_up(["queue"])
    assert re.search(r"event=done_moved messages=3", r.log("queue-1")), r.log("queue-1")
    assert counts(r) == {"msg": 0, "done": 3, "done_at": 3, "body": 0}
    for i in ids:
        assert r.ctl("queue", "show", i)["state"] == "done"
    time.sleep(1)
    assert len(r.maildir_files()) == 3
