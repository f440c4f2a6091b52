"""End-to-end tests of sendarix-events and sendarixctl.

The real binaries run from build/bin on a private relay (harness.Relay):
status with services up and down, tenant / domain / credential management
through auth, the CLI's errors and exit codes, the HTTP endpoints with curl,
and events pushed onto the bus as a service would, then found with
`sendarixctl log search` and /api/v1/events, also after a restart of events.
"""
import json
import os
import re
import subprocess
import time

import pytest
import zmq

from harness import BIN, wait_for

def have(binary):
    return os.access(os.path.join(BIN, binary), os.X_OK)


pytestmark = pytest.mark.skipif(not have("sendarix-events") or not have("sendarixctl"),
                                reason="build/bin has no sendarix-events or sendarixctl")


def only_bus(*keep):
    """config_edit: keep only these keys in the bus section (the others are not configured)."""
    def edit(text):
        start = text.index("bus = {")
        end = text.index("};", start)
        lines = text[start:end].splitlines()
        kept = [lines[0]] + [l for l in lines[1:]
                             if l.strip().split(" ", 1)[0] in keep]
        return text[:start] + "\n".join(kept) + "\n" + text[end:]
    return edit


def curl(r, path):
    """GET http://127.0.0.1:<http>/path -> (status, content type, body)."""
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code} %{content_type}",
                          "http://127.0.0.1:%d%s" % (r.http, path)],
                         capture_output=True, text=True, timeout=10)
    body, _, tail = out.stdout.rpartition("\n")
    code, _, ctype = tail.partition(" ")
    return int(code), ctype, body


def endpoint(r, key):
    with open(r.config) as f:
        m = re.search(r'^\s*%s = \[ "([^"]+)"' % key, f.read(), re.M)
    return m.group(1)


# ---- status ----

def test_status_up_down_and_exit_code(make_relay):
    if not have("sendarix-auth"):
        pytest.skip("sendarix-auth is not built")
    r = make_relay(config_edit=only_bus("auth", "events", "events_ingest"))
    r.start(["events", "auth"])
    doc = r.ctl("status")
    names = {s["service"]: s for s in doc["services"]}
    assert set(names) == {"auth", "events"}
    for s in doc["services"]:
        assert s["up"] is True
        assert s["instance"] == "1"
        assert s["pid"] == r.procs[s["service"] + "-1"].pid
        assert s["version"]
        assert s["uptime_s"] >= 0
        assert int(s["stats"]["heap_in_use_bytes"]) > 0
    assert "events_stored" in names["events"]["stats"]
    assert doc["up"] == 2 and doc["down"] == 0

    text = r.ctl_run("status", json_out=False)
    assert text.returncode == 0, text.stderr
    assert re.search(r"^events\s+1\s+up\s+%d" % r.procs["events-1"].pid, text.stdout, re.M)

    # a configured service that is down: reported, and the exit status says so
    r.kill("auth")
    t0 = time.time()
    res = r.ctl_run("status")
    assert time.time() - t0 < 5
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    states = {s["service"]: s for s in doc["services"]}
    assert states["auth"]["up"] is False and "pid" not in states["auth"]
    assert states["events"]["up"] is True
    assert doc["up"] == 1 and doc["down"] == 1
    text = r.ctl_run("status", json_out=False)
    assert text.returncode == 1
    assert re.search(r"^auth\s+1\s+down", text.stdout, re.M)


def test_status_with_unstarted_services_exits_1(make_relay):
    r = make_relay()
    r.start(["events"])
    res = r.ctl_run("status")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    states = {(s["service"], s["instance"]): s["up"] for s in doc["services"]}
    assert states[("events", "1")] is True
    assert states[("queue", "1")] is False
    # neither the PULL socket nor router's worker socket is pinged
    assert all(s["service"] not in ("events_ingest", "router_workers") for s in doc["services"])


# ---- auth management ----

def test_tenant_domain_cred_round_trip(make_relay):
    if not have("sendarix-auth"):
        pytest.skip("sendarix-auth is not built")
    r = make_relay()
    r.start(["events", "auth"])

    t = r.ctl("tenant", "add", "acme")
    assert t["tenant"]["name"] == "acme"
    text = r.ctl_run("tenant", "add", "beta", json_out=False)
    assert text.returncode == 0 and "beta" in text.stdout

    d = r.ctl("domain", "add", "mail.acme.test", "--tenant", "acme", "--verified")
    assert (d["domain"], d["tenant"], d["verified"]) == ("mail.acme.test", "acme", True)
    r.ctl("domain", "add", "other.acme.test", "--tenant", "acme")

    c = r.ctl("cred", "add", "alice", "--tenant", "acme", "--password-stdin", "--env",
              "staging", "--domain", "mail.acme.test", input="alice-secret-pw\n")
    cred = c["credential"]
    assert cred["username"] == "alice"
    assert cred["tenant"] == "acme"
    assert cred["environment"] == "staging"
    assert cred["revoked"] is False
    assert cred["domains"] == ["mail.acme.test"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", cred["created_at"])
    text = r.ctl_run("--password", "bob-secret-pw", "cred", "add", "bob", "--tenant", "acme",
                     json_out=False)
    assert text.returncode == 2  # --password before the command is no global option

    text = r.ctl_run("cred", "add", "bob", "--tenant", "acme", "--password", "bob-secret-pw",
                     json_out=False)
    assert text.returncode == 0, text.stderr
    assert "bob" in text.stdout and "bob-secret-pw" not in text.stdout

    tenants = r.ctl("tenant", "list")["tenants"]
    by_name = {x["name"]: x for x in tenants}
    assert set(by_name) == {"acme", "beta"}
    assert sorted(by_name["acme"]["domains"]) == ["mail.acme.test", "other.acme.test"]

    domains = r.ctl("domain", "list", "--tenant", "acme")["domains"]
    assert sorted(x["domain"] for x in domains) == ["mail.acme.test", "other.acme.test"]
    assert all(x["tenant"] == "acme" for x in domains)
    assert {x["domain"]: x["verified"] for x in domains} == {"mail.acme.test": True,
                                                             "other.acme.test": False}
    assert r.ctl("domain", "list", "--tenant", "beta")["domains"] == []
    text = r.ctl_run("domain", "list", json_out=False)
    assert "mail.acme.test" in text.stdout

    creds = r.ctl("cred", "list", "--tenant", "acme")["credentials"]
    assert sorted(x["username"] for x in creds) == ["alice", "bob"]
    for x in creds:
        assert set(x) == {"username", "tenant", "environment", "created_at", "revoked",
                          "password_count", "domains", "allowed_networks", "rotated_at",
                          "rate_per_minute", "rate_per_day"}
        assert x["allowed_networks"] == [] and x["rotated_at"] is None
    all_text = r.ctl_run("cred", "list", json_out=False)
    assert all_text.returncode == 0
    assert "alice" in all_text.stdout
    assert "alice-secret-pw" not in all_text.stdout and "bob-secret-pw" not in all_text.stdout

    # the login works with the password given on stdin, newline stripped
    from buslib import Bus, msg  # noqa: E402
    with Bus(endpoint(r, "auth")) as bus:
        body, rep, _ = bus.request("auth_login_verify",
                                   msg("AuthLoginVerify", mechanism="PLAIN", username="alice",
                                       secret=b"alice-secret-pw", client_ip="127.0.0.1"),
                                   timeout=10)
    assert body == "auth_login_verify_reply" and rep.ok
    assert list(rep.domains) == ["mail.acme.test"]  # its own list, verified domains only


def test_cli_errors(make_relay):
    if not have("sendarix-auth"):
        pytest.skip("sendarix-auth is not built")
    r = make_relay()
    r.start(["events", "auth"])
    r.ctl("tenant", "add", "acme")

    # the same tenant twice: auth's refusal, exit 1, one JSON document
    res = r.ctl_run("tenant", "add", "acme")
    assert res.returncode == 1
    assert "acme" in json.loads(res.stdout)["error"]
    assert "acme" in res.stderr

    # an unknown tenant: exit 1 with a sentence naming it
    for args in (["domain", "add", "x.test", "--tenant", "nobody"],
                 ["cred", "add", "carol", "--tenant", "nobody", "--password", "carol-pw-123"],
                 ["domain", "list", "--tenant", "nobody"]):
        res = r.ctl_run(*args)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        err = json.loads(res.stdout)["error"]
        assert "nobody" in err and "not found" in err
        text = r.ctl_run(*args, json_out=False)
        assert text.returncode == 1
        assert "nobody" in text.stderr and text.stdout == ""

    # an empty password is refused before anything is sent
    res = r.ctl_run("cred", "add", "dave", "--tenant", "acme", "--password-stdin", input="\n")
    assert res.returncode == 1
    assert "empty password" in json.loads(res.stdout)["error"]
    assert r.ctl("cred", "list")["credentials"] == []

    # usage errors: exit 2, a sentence on stderr
    for args, words in ((["frobnicate"], "unknown command"),
                        (["queue", "show"], "missing argument"),
                        (["cred", "add", "erin"], "missing option --tenant"),
                        (["domain", "add", "x.test"], "missing option --tenant"),
                        (["tenant"], "needs a subcommand"),
                        (["status", "--bogus"], "unknown option"),
                        (["log", "search", "--limit", "zero"], "--limit"),
                        (["log", "search", "--since", "yesterday"], "--since")):
        res = r.ctl_run(*args, json_out=False)
        assert res.returncode == 2, (args, res.stderr)
        assert words in res.stderr, (args, res.stderr)
        res = r.ctl_run(*args)
        assert res.returncode == 2
        assert words in json.loads(res.stdout)["error"]

    res = r.ctl_run("help", json_out=False)
    assert res.returncode == 0 and "log search" in res.stdout

    # no config: exit 1, saying which file
    missing = os.path.join(r.var, "nope.conf")
    res = subprocess.run([os.path.join(BIN, "sendarixctl"), "--config", missing, "status"],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 1 and missing in res.stderr


def test_auth_down_is_a_failed_operation(make_relay):
    r = make_relay()
    r.start(["events"])
    t0 = time.time()
    res = r.ctl_run("--timeout", "1", "tenant", "list")
    assert res.returncode == 1
    assert "not reachable" in json.loads(res.stdout)["error"]
    assert time.time() - t0 < 5


# ---- HTTP ----

def test_http_endpoints(make_relay):
    r = make_relay()
    r.start(["events"])
    code, ctype, body = curl(r, "/healthz")
    assert (code, body) == (200, "ok\n")
    assert ctype.startswith("text/plain")

    code, ctype, body = curl(r, "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    assert "# TYPE sendarix_events_total counter" in body
    assert re.search(r"^sendarix_events_stored 0$", body, re.M)
    assert re.search(r"^sendarix_events_store_bytes \d+$", body, re.M)

    code, ctype, body = curl(r, "/api/v1/events?message_id=0000000000000000nope")
    assert code == 200 and ctype == "application/json"
    assert json.loads(body)["events"] == []

    for path in ("/api/v1/events?limit=0", "/api/v1/events?since=yesterday",
                 "/api/v1/events?colour=blue", "/api/v1/events?limit=99999"):
        code, ctype, body = curl(r, path)
        assert code == 400, path
        assert json.loads(body)["error"]
    code, ctype, body = curl(r, "/no/such/path")
    assert code == 404 and json.loads(body)["error"]


def test_log_search_unknown_id_is_empty(make_relay):
    r = make_relay()
    r.start(["events"])
    assert r.ctl("log", "search", "--id", "00000000000000000000") == {"events": []}
    text = r.ctl_run("log", "search", "--id", "00000000000000000000", json_out=False)
    assert text.returncode == 0
    assert "no events" in text.stdout


# ---- events pushed onto the bus ----

def push_events(r, events):
    """Send EventPublish envelopes to events' PULL socket, as every service does."""
    from buslib import Envelope, VERSION, msg  # noqa: E402
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(endpoint(r, "events_ingest"))
    for ev in events:
        env = Envelope(version=VERSION, request_id=0, sender="tests/1")
        env.event_publish.event.CopyFrom(msg("Event", **ev))
        sock.send(env.SerializeToString())
    sock.close()


def test_pushed_events_are_searchable_and_survive_restart(make_relay):
    r = make_relay()
    r.start(["events"])
    mid = "0e2etest00000000mid1"
    base = int(time.time() * 1000) - 60000
    events = [
        dict(id="ev03", at_ms=base + 3000, type="delivered", service="delivery", instance="1",
             message_id=mid, recipient="a@example.test", attempt=1,
             reply=msg_status(250, "2.0.0", "ok"), remote_host="sandbox"),
        dict(id="ev01", at_ms=base + 1000, type="accepted", service="ingress", instance="1",
             message_id=mid, sender="s@example.test", tenant="demo"),
        dict(id="ev02", at_ms=base + 2000, type="queued", service="queue", instance="1",
             message_id=mid),
        dict(id="other1", at_ms=base + 1500, type="accepted", service="ingress",
             instance="1", message_id="0e2etest00000000mid2"),
        dict(id="", at_ms=base, type="queued", message_id=mid),  # malformed: no id
    ]
    push_events(r, events)

    def stored():
        doc = r.ctl("log", "search", "--id", mid)
        return doc if len(doc["events"]) == 3 else None
    doc = wait_for(stored, timeout=10, what="three events of %s" % mid)
    assert [e["id"] for e in doc["events"]] == ["ev01", "ev02", "ev03"]
    last = doc["events"][2]
    assert last["type"] == "delivered" and last["recipient"] == "a@example.test"
    assert last["reply"] == {"code": 250, "enhanced": "2.0.0", "text": "ok"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", last["at"])

    doc = r.ctl("log", "search", "--type", "accepted")
    assert [e["id"] for e in doc["events"]] == ["ev01", "other1"]
    doc = r.ctl("log", "search", "--id", mid, "--limit", "2")
    assert [e["id"] for e in doc["events"]] == ["ev01", "ev02"]

    text = r.ctl_run("log", "search", "--id", mid, json_out=False)
    lines = text.stdout.strip().splitlines()
    assert len(lines) == 3 and "delivered" in lines[2] and mid in lines[2]

    code, _, body = curl(r, "/api/v1/events?message_id=%s&type=queued" % mid)
    assert code == 200
    assert [e["id"] for e in json.loads(body)["events"]] == ["ev02"]
    code, _, body = curl(r, "/metrics")
    assert re.search(r'^sendarix_events_total\{type="accepted"\} 2$', body, re.M)
    assert re.search(r"^sendarix_events_stored 4$", body, re.M)
    assert re.search(r"^sendarix_events_rejected_total 1$", body, re.M)
    stats = {s["service"]: s for s in r.ctl("status", check=False)["services"]}["events"]["stats"]
    assert stats["events_stored"] == "4"

    # a restart keeps what was stored
    r.kill("events")
    r.spawn("events")
    r.wait_up(["events"])
    doc = r.ctl("log", "search", "--id", mid)
    assert [e["id"] for e in doc["events"]] == ["ev01", "ev02", "ev03"]


def msg_status(code, enhanced, text):
    from buslib import msg  # noqa: E402
    return msg("Status", code=code, enhanced=enhanced, text=text)


def test_retention_sweep_removes_old_events(make_relay):
    def edit(text):
        return text.replace("events = {", 'events = {\n  retention = "1m";\n  sweep_interval = "1s";')
    r = make_relay(config_edit=edit)
    r.start(["events"])
    now = int(time.time() * 1000)
    mid = "0e2etest00000000ret1"
    push_events(r, [
        dict(id="old1", at_ms=now - 300000, type="queued", message_id=mid),
        dict(id="old2", at_ms=now - 120000, type="deferred", message_id=mid),
        dict(id="new1", at_ms=now, type="delivered", message_id=mid),
    ])

    def swept():
        ids = [e["id"] for e in r.ctl("log", "search", "--id", mid)["events"]]
        return ids if ids == ["new1"] else None
    wait_for(swept, timeout=10, what="old events swept")
    code, _, body = curl(r, "/metrics")
    assert re.search(r"^sendarix_events_stored 1$", body, re.M)
    assert "event=sweep deleted=" in r.log("events")


def test_sandbox_fail_and_clear(make_relay):
    if not have("sendarix-sandbox"):
        pytest.skip("sendarix-sandbox is not built")
    import smtplib
    r = make_relay()
    r.start(["events", "sandbox"])
    doc = r.ctl("sandbox", "fail", "--code", "421", "--seconds", "30", "--text", "drill")
    assert doc["code"] == 421
    assert doc["sandboxes"][0]["code"] == 421
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", doc["sandboxes"][0]["until"])

    def greeting():
        try:
            with smtplib.SMTP("127.0.0.1", r.sandbox, timeout=5) as s:
                return s.noop()[0]
        except smtplib.SMTPConnectError as e:
            return e.smtp_code
        except smtplib.SMTPServerDisconnected:
            return "disconnected"
    assert greeting() == 421

    text = r.ctl_run("sandbox", "fail", "--code", "0", json_out=False)
    assert text.returncode == 0 and "cleared" in text.stdout
    assert greeting() == 250
