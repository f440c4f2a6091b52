"""A message whose text is complete while no queue instance is connected
(one restarting) waits for one, up to ingress's queue_wait, rather than get
a 451 at once: the client gets its 250 when the queue is back, and a 451
4.3.0 when it does not come back in time, with nothing kept or sent."""
import re
import smtplib
import threading
import time

from harness import wait_for
from test_queue import section_conf
from test_queue_scale import delivered


def queue_wait(seconds):
    return section_conf("ingress", queue_wait='"%ds"' % seconds)


def send(r, token):
    """(code, text, seconds from the end of the text to the reply)."""
    with smtplib.SMTP("127.0.0.1", r.legacy, timeout=60) as s:
        s.ehlo()
        s.mail("app@example.test")
        code, text = s.rcpt("%s@example.org" % token)
        assert code == 250, text
        code, text = s.docmd("DATA")
        assert code == 354, text
        t0 = time.monotonic()
        s.send(b"Subject: %s\r\nX-Token: %s\r\n\r\nhello\r\n.\r\n" % (token.encode(), token.encode()))
        code, text = s.getreply()
        return code, text.decode(errors="replace"), time.monotonic() - t0


def copies(r, token):
    return delivered(r).get(token, 0)


def test_a_finished_message_waits_for_a_restarting_queue(make_relay):
    r = make_relay(config_edit=queue_wait(20))
    r.start()
    r.kill("queue")
    # the queue starts again while the message waits at its end of data
    later = threading.Timer(1.5, lambda: r.spawn("queue"))
    later.start()
    try:
        code, text, waited = send(r, "waited")
    finally:
        later.join()
    assert code == 250, text
    assert waited >= 1.0, "answered after %.2f s, before the queue was back" % waited
    msgid = re.search(r"queued as ([0-9a-v]{20})", text).group(1)
    log = r.log("ingress")
    assert re.search(r"msg=%s event=queue_wait ms=20000" % msgid, log), log[-2000:]
    wait_for(lambda: copies(r, "waited") == 1, timeout=30, what="the message delivered")
    assert r.ctl("queue", "show", msgid)["recipients"][0]["state"] in ("delivered", "queued")


def test_no_queue_in_time_gives_451_and_keeps_nothing(make_relay):
    r = make_relay(config_edit=queue_wait(1))
    r.start()
    r.kill("queue")
    code, text, waited = send(r, "refused")
    assert (code, text[:5]) == (451, "4.3.0"), (code, text)
    assert waited >= 0.9, "451 after %.2f s, without waiting" % waited
    assert "event=queue_unavailable step=commit" in r.log("ingress")
    # the queue comes back: the refused message was never handed over
    r.spawn("queue")
    r.wait_up(["queue"])
    code, text, _ = send(r, "after")
    assert code == 250, text
    wait_for(lambda: copies(r, "after") == 1, timeout=30, what="the next message delivered")
    time.sleep(1)
    assert copies(r, "refused") == 0
