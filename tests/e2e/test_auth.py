"""End-to-end tests of sendarix-auth with sendarix-events, driven as operators
and ingress drive them.

The real binaries run from build/bin on a private relay (harness.Relay).
Management goes through sendarixctl; logins and rate checks are sent on the
bus with tests/e2e/buslib.py exactly as ingress sends them (AuthLoginVerify,
AuthRateCheck). Covered: verified sending domains, password rotation with and
without a grace period, revoke, client network allowlists (IPv4, IPv6,
IPv4-mapped), lockouts with their end, rate limits per minute and per day
with the day counts surviving a kill -9 of auth, bearer-token logins
(XOAUTH2, OAUTHBEARER) with HS256, RS256 and ES256 tokens and the RFC 7628
error JSON, and a bad issuer config stopping auth with its file and line.
Tokens are signed here with the openssl command line.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import time

import pytest

from harness import BIN, submission_login, wait_for


def have(binary):
    return os.access(os.path.join(BIN, binary), os.X_OK)


pytestmark = pytest.mark.skipif(not have("sendarix-auth") or not have("sendarixctl")
                                or not have("sendarix-events"),
                                reason="build/bin lacks sendarix-auth, sendarix-events or "
                                       "sendarixctl")


def endpoint(r, key):
    with open(r.config) as f:
        m = re.search(r'^\s*%s = \[ "([^"]+)"' % key, f.read(), re.M)
    return m.group(1)


def auth_section(text, body):
    """config_edit helper: put body inside the auth = { } section."""
    start = text.index("auth = {")
    end = text.index("};", start)
    return text[:start] + "auth = {\n" + body + "\n" + text[end:]


def login(r, user, secret, ip="127.0.0.1", mech="PLAIN", sid="e2e-sid"):
    """AuthLoginVerify as ingress sends it; returns the reply."""
    from buslib import Bus, msg  # noqa: E402
    if isinstance(secret, str):
        secret = secret.encode()
    with Bus(endpoint(r, "auth")) as bus:
        body, rep, _ = bus.request("auth_login_verify",
                                   msg("AuthLoginVerify", mechanism=mech, username=user,
                                       secret=secret, client_ip=ip, session_id=sid),
                                   timeout=15)
    assert body == "auth_login_verify_reply", body
    return rep


def rate_check(r, tenant, user, sid="e2e-sid"):
    from buslib import Bus, msg  # noqa: E402
    with Bus(endpoint(r, "auth")) as bus:
        body, rep, _ = bus.request("auth_rate_check",
                                   msg("AuthRateCheck", tenant=tenant, username=user,
                                       session_id=sid), timeout=10)
    return body, rep


def setup_tenant(r, tenant="acme", domain="mail.acme.test", user="app", password="app-password-1"):
    r.ctl("tenant", "add", tenant)
    r.ctl("domain", "add", domain, "--tenant", tenant, "--verified")
    r.ctl("cred", "add", user, "--tenant", tenant, "--password-stdin", input=password + "\n")


def auth_failures(r, user, count):
    """The auth_failed events of user in the log, once count of them are there."""
    def found():
        evs = [e for e in r.ctl("log", "search", "--type", "auth_failed")["events"]
               if e["attrs"].get("username") == user]
        return evs if len(evs) >= count else None
    return wait_for(found, timeout=10, what="%d auth_failed events of %s" % (count, user))


# ---- domains ----

def test_verified_domains(make_relay):
    r = make_relay()
    r.start(["events", "auth"])
    r.ctl("tenant", "add", "acme")
    d = r.ctl("domain", "add", "Mail.Acme.Test", "--tenant", "acme", "--verified")
    assert {k: d[k] for k in ("domain", "tenant", "verified")} == {
        "domain": "mail.acme.test", "tenant": "acme", "verified": True}
    assert [k["selector"] for k in d["dkim"]] == ["sx1", "sx1e"]  # test_dkim.py has the rest
    d = r.ctl("domain", "add", "news.acme.test", "--tenant", "acme")
    assert d["verified"] is False
    r.ctl("cred", "add", "app", "--tenant", "acme", "--password", "app-password-1")

    domains = r.ctl("domain", "list", "--tenant", "acme")["domains"]
    assert [x["domain"] for x in domains] == ["mail.acme.test", "news.acme.test"]
    for x in domains:
        assert set(x) == {"domain", "tenant", "verified", "created_at", "verified_at", "dkim"}
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", x["created_at"])
    assert [x["verified"] for x in domains] == [True, False]
    text = r.ctl_run("domain", "list", json_out=False)
    assert re.search(r"^news\.acme\.test\s+acme\s+unverified", text.stdout, re.M)

    # a login may use only the verified one; the tenant still lists both
    rep = login(r, "app", "app-password-1")
    assert rep.ok and list(rep.domains) == ["mail.acme.test"]
    tenants = r.ctl("tenant", "list")["tenants"]
    assert tenants[0]["domains"] == ["mail.acme.test", "news.acme.test"]
    assert tenants[0]["rate_per_minute"] == 0 and tenants[0]["rate_per_day"] == 0

    # verifying it later: the same command with --verified
    assert r.ctl("domain", "add", "news.acme.test", "--tenant", "acme", "--verified")["verified"]
    rep = login(r, "app", "app-password-1")
    assert sorted(rep.domains) == ["mail.acme.test", "news.acme.test"]
    res = r.ctl_run("domain", "add", "news.acme.test", "--tenant", "acme", "--verified")
    assert res.returncode == 1 and "already" in json.loads(res.stdout)["error"]
    res = r.ctl_run("domain", "list", "--tenant", "nobody")
    assert res.returncode == 1 and "nobody" in json.loads(res.stdout)["error"]


# ---- rotation and revoke ----

def test_rotate_and_revoke(make_relay):
    r = make_relay()
    r.start(["events", "auth"])
    setup_tenant(r)
    assert login(r, "app", "app-password-1").ok
    assert login(r, "app", "app-password-1").ok  # cached now

    # at once: the old password stops, even though a login of it is cached
    c = r.ctl("cred", "rotate", "app", "--password-stdin", "--grace", "0",
              input="app-password-2\n")["credential"]
    assert c["password_count"] == 1 and c["rotated_at"]
    rep = login(r, "app", "app-password-1")
    assert not rep.ok and (rep.status.code, rep.status.enhanced) == (535, "5.7.8")
    assert login(r, "app", "app-password-2").ok

    # with a grace period both work, and the list counts two live passwords
    text = r.ctl_run("cred", "rotate", "app", "--password", "app-password-3", "--grace", "1h",
                     json_out=False)
    assert text.returncode == 0, text.stderr
    assert "older ones stop working at" in text.stdout and "app-password-3" not in text.stdout
    assert login(r, "app", "app-password-2").ok
    assert login(r, "app", "app-password-3").ok
    creds = r.ctl("cred", "list")["credentials"]
    assert creds[0]["password_count"] == 2
    assert set(creds[0]) == {"username", "tenant", "environment", "created_at", "revoked",
                             "password_count", "domains", "allowed_networks", "rotated_at",
                             "rate_per_minute", "rate_per_day"}

    # revoke: nothing works any more, and it stays so
    c = r.ctl("cred", "revoke", "app")["credential"]
    assert c["revoked"] is True and c["password_count"] == 0
    for pw in ("app-password-2", "app-password-3"):
        rep = login(r, "app", pw)
        assert not rep.ok and rep.status.code == 535
    res = r.ctl_run("cred", "rotate", "app", "--password", "app-password-4")
    assert res.returncode == 1 and "revoked" in json.loads(res.stdout)["error"]
    assert r.ctl("cred", "list")["credentials"][0]["revoked"] is True
    evs = auth_failures(r, "app", 3)
    assert [e["attrs"]["reason"] for e in evs][-2:] == ["revoked", "revoked"]
    assert all(e["reply"]["code"] == 535 for e in evs)

    res = r.ctl_run("cred", "rotate", "app", "--password", "x", "--grace", "1w")
    assert res.returncode == 2 and "--grace" in json.loads(res.stdout)["error"]
    res = r.ctl_run("cred", "revoke", "nobody")
    assert res.returncode == 1 and "nobody" in json.loads(res.stdout)["error"]


# ---- allowlists ----

def test_allowlist(make_relay):
    r = make_relay()
    r.start(["events", "auth"])
    setup_tenant(r)
    doc = r.ctl("allow", "add", "app", "10.1.2.3/8")
    assert doc == {"username": "app", "networks": ["10.0.0.0/8"]}
    doc = r.ctl("allow", "add", "app", "2001:DB8::/32")
    assert doc["networks"] == ["10.0.0.0/8", "2001:db8::/32"]

    rep = login(r, "app", "app-password-1", ip="127.0.0.1", sid="sid-outside")
    assert not rep.ok and (rep.status.code, rep.status.enhanced) == (535, "5.7.8")
    assert login(r, "app", "app-password-1", ip="10.20.30.40").ok
    assert login(r, "app", "app-password-1", ip="::ffff:10.20.30.40").ok
    assert login(r, "app", "app-password-1", ip="2001:db8:7::1").ok
    assert not login(r, "app", "app-password-1", ip="2001:db9::1").ok

    ev = auth_failures(r, "app", 2)
    outside = [e for e in ev if e["session_id"] == "sid-outside"][0]
    assert outside["attrs"]["reason"] == "network"
    assert outside["attrs"]["client_ip"] == "127.0.0.1"
    assert "reason=network" in r.log("auth")

    assert r.ctl("allow", "list", "app")["networks"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert r.ctl("cred", "list")["credentials"][0]["allowed_networks"] == ["10.0.0.0/8",
                                                                          "2001:db8::/32"]
    res = r.ctl_run("allow", "remove", "app", "192.0.2.0/24")
    assert res.returncode == 1 and "not allowed" in json.loads(res.stdout)["error"]
    res = r.ctl_run("allow", "add", "app", "10.0.0.0/8")
    assert res.returncode == 1 and "already" in json.loads(res.stdout)["error"]
    res = r.ctl_run("allow", "add", "app", "not-a-network")
    assert res.returncode == 1 and "not an IPv4 or IPv6 network" in json.loads(res.stdout)["error"]
    res = r.ctl_run("allow", "add", "app", json_out=False)
    assert res.returncode == 2 and "missing argument <CIDR>" in res.stderr

    r.ctl("allow", "remove", "app", "10.0.0.0/8")
    r.ctl("allow", "remove", "app", "2001:db8::/32")
    assert login(r, "app", "app-password-1", ip="127.0.0.1").ok
    text = r.ctl_run("allow", "list", "app", json_out=False)
    assert "any client address" in text.stdout


# ---- lockouts ----

def test_lockout_and_its_end(make_relay):
    r = make_relay(config_edit=lambda t: auth_section(
        t, '  lockout_failures = 3;\n  lockout_window = "1m";\n  lockout_duration = "3s";'))
    r.start(["events", "auth"])
    setup_tenant(r)
    for name in ("admin", "root", "test"):
        rep = login(r, name, "guess-guess", ip="192.0.2.50")
        assert not rep.ok and rep.status.code == 535
    t0 = time.time()
    rep = login(r, "app", "app-password-1", ip="192.0.2.50")
    assert not rep.ok
    assert (rep.status.code, rep.status.enhanced) == (421, "4.7.0")
    assert 1 <= rep.retry_after_s <= 3
    assert rep.status.text == ("Too many authentication failures; try again in %d seconds"
                               % rep.retry_after_s)
    # another client is not locked, and neither is the user
    assert login(r, "app", "app-password-1", ip="192.0.2.51").ok
    assert "event=auth_lockout" in r.log("auth") and "scope=client" in r.log("auth")
    stats = {s["service"]: s for s in r.ctl("status", check=False)["services"]}["auth"]["stats"]
    assert stats["lockouts"] == "1" and int(stats["verify_locked"]) >= 1

    time.sleep(max(0, rep.retry_after_s - (time.time() - t0)) + 0.2)
    assert login(r, "app", "app-password-1", ip="192.0.2.50").ok

    # the user: three failures from anywhere lock it, for every client
    for i in range(3):
        assert not login(r, "app", "wrong-password", ip="198.51.100.%d" % (i + 1)).ok
    rep = login(r, "app", "app-password-1", ip="203.0.113.9")
    assert rep.status.code == 421
    ev = auth_failures(r, "app", 4)
    assert ev[-1]["attrs"]["reason"] == "locked_out" and ev[-1]["reply"]["code"] == 421


# ---- rate limits ----

def submit_mail_from(r, user, password, sender):
    """MAIL over STARTTLS + AUTH on submission; its reply (code, text)."""
    with submission_login(r, user, password) as s:
        code, text = s.mail(sender)
        return code, text.decode()


def test_rate_limit_at_mail_applies_within_the_lease(make_relay):
    """With no limit, auth lets ingress skip the check for a while; a limit
    set then reaches MAIL (451 4.7.1) once that while is over."""
    r = make_relay()
    r.start()
    setup_tenant(r)
    body, rep = rate_check(r, "acme", "app")
    assert rep.ok and rep.unlimited_for_ms == 5000
    assert submit_mail_from(r, "app", "app-password-1", "app@mail.acme.test")[0] == 250
    r.ctl("limit", "set", "--cred", "app", "--per-minute", "2")
    body, rep = rate_check(r, "acme", "app")  # one of the two
    assert rep.ok and rep.unlimited_for_ms == 0
    time.sleep(5.5)  # ingress's lease from the first MAIL ends
    assert submit_mail_from(r, "app", "app-password-1", "app@mail.acme.test")[0] == 250
    code, text = submit_mail_from(r, "app", "app-password-1", "app@mail.acme.test")
    assert code == 451 and text.startswith("4.7.1 Rate limit of 2 messages per minute"), text


def test_rate_limits(make_relay):
    r = make_relay()
    r.start(["events", "auth"])
    setup_tenant(r)
    r.ctl("cred", "add", "app2", "--tenant", "acme", "--password", "app2-password")
    doc = r.ctl("limit", "set", "--cred", "app", "--per-minute", "2")
    assert doc == {"credential": "app", "per_minute": 2, "per_day": 0}
    doc = r.ctl("limit", "set", "--tenant", "acme", "--per-day", "3")
    assert doc == {"tenant": "acme", "per_minute": 0, "per_day": 3}
    # an option left out keeps its value
    assert r.ctl("limit", "set", "--cred", "app", "--per-day", "100")["per_minute"] == 2
    cred = [c for c in r.ctl("cred", "list")["credentials"] if c["username"] == "app"][0]
    assert (cred["rate_per_minute"], cred["rate_per_day"]) == (2, 100)
    assert r.ctl("tenant", "list")["tenants"][0]["rate_per_day"] == 3

    for _ in range(2):
        body, rep = rate_check(r, "acme", "app")
        assert body == "auth_rate_check_reply" and rep.ok
    body, rep = rate_check(r, "acme", "app", sid="sid-limited")
    assert not rep.ok
    assert (rep.status.code, rep.status.enhanced) == (451, "4.7.1")
    assert 1 <= rep.retry_after_s <= 60
    assert rep.status.text == ("Rate limit of 2 messages per minute reached for credential app; "
                               "retry in %d seconds" % rep.retry_after_s)
    assert "event=rate_limited sid=sid-limited" in r.log("auth")
    # that refusal counted nothing against the tenant: one message is left for app2
    assert rate_check(r, "acme", "app2")[1].ok
    body, rep = rate_check(r, "acme", "app2")
    assert rep.status.code == 451 and "per day reached for tenant acme" in rep.status.text
    assert rep.retry_after_s > 86000
    # legacy mail names the tenant alone
    assert rate_check(r, "acme", "")[1].status.code == 451
    # unknown names are errors, not refusals
    body, rep = rate_check(r, "nobody", "")
    assert body == "error" and rep.status.code == 404
    body, rep = rate_check(r, "", "ghost")
    assert body == "error" and rep.status.code == 404

    res = r.ctl_run("limit", "set", "--tenant", "acme", "--cred", "app", "--per-day", "1")
    assert res.returncode == 2
    res = r.ctl_run("limit", "set", "--cred", "nobody", "--per-day", "1")
    assert res.returncode == 1 and "nobody" in json.loads(res.stdout)["error"]


def test_day_counts_survive_kill(make_relay):
    r = make_relay()
    r.start(["events", "auth"])
    setup_tenant(r, tenant="beta", domain="beta.test", user="bee", password="bee-password-1")
    r.ctl("limit", "set", "--tenant", "beta", "--per-day", "2")
    assert rate_check(r, "beta", "bee")[1].ok
    assert rate_check(r, "beta", "bee")[1].ok

    def written():
        st = {s["service"]: s for s in r.ctl("status", check=False)["services"]}["auth"]
        return st["up"] and st["stats"].get("rate_unwritten") == "0"
    wait_for(written, timeout=10, what="day counters written")
    r.kill("auth")  # SIGKILL: no chance to write anything on the way out
    r.spawn("auth")
    r.wait_up(["auth"])
    body, rep = rate_check(r, "beta", "bee")
    assert body == "auth_rate_check_reply" and not rep.ok
    assert "2 messages per day reached for tenant beta" in rep.status.text


# ---- bearer tokens ----

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as the 64-byte r||s of a JWT."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def make_token(alg, claims, secret=None, key=None, header_alg=None):
    header = {"alg": header_alg or alg, "typ": "JWT"}
    signing = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
               b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if alg == "HS256":
        sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    elif alg == "none":
        sig = b""
    else:
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                             capture_output=True, check=True).stdout
        if alg == "ES256":
            sig = der_to_raw(sig)
    return signing + "." + b64url(sig)


HS_SECRET = "e2e-hs256-secret-that-is-long-enough!"


def keys_in(var):
    os.makedirs(os.path.join(var, "keys"), exist_ok=True)
    paths = {}
    for name, args in (("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                       ("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])):
        priv = os.path.join(var, "keys", name + ".key")
        pub = os.path.join(var, "keys", name + ".pem")
        subprocess.run(["openssl", "genpkey"] + args + ["-out", priv], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                       capture_output=True)
        paths[name] = (priv, pub)
    return paths


def test_bearer_tokens(make_relay):
    holder = {}

    def edit(text):
        var = os.path.dirname(re.search(r'state_dir = "([^"]+)"', text).group(1))
        holder["keys"] = keys = keys_in(var)
        # many refusals in a row here: no lockouts
        return auth_section(text, """  lockout_failures = 0;
  oauth_issuers = (
    { issuer = "https://id.example.test"; audience = "sendarix"; algorithm = "HS256";
      secret = "%s"; },
    { issuer = "https://rs.example.test"; audience = "sendarix"; algorithm = "RS256";
      public_key = "%s"; },
    { issuer = "https://es.example.test"; audience = "sendarix"; algorithm = "ES256";
      public_key = "%s"; }
  );""" % (HS_SECRET, keys["rsa"][1], keys["ec"][1]))
    r = make_relay(config_edit=edit)
    keys = holder["keys"]
    r.start(["events", "auth"])
    setup_tenant(r, user="app@acme.test")
    now = int(time.time())

    def claims(iss, **extra):
        c = {"iss": iss, "aud": ["sendarix"], "sub": "app@acme.test", "exp": now + 600,
             "iat": now}
        c.update(extra)
        return c

    good = [make_token("HS256", claims("https://id.example.test"), secret=HS_SECRET),
            make_token("RS256", claims("https://rs.example.test"), key=keys["rsa"][0]),
            make_token("ES256", claims("https://es.example.test"), key=keys["ec"][0])]
    for tok, mech in zip(good, ("XOAUTH2", "OAUTHBEARER", "XOAUTH2")):
        rep = login(r, "app@acme.test", tok, mech=mech)
        assert rep.ok, (mech, rep.status.text)
        assert rep.tenant == "acme" and list(rep.domains) == ["mail.acme.test"]
        assert rep.oauth_error == ""

    expired = make_token("HS256", claims("https://id.example.test", exp=now - 300),
                         secret=HS_SECRET)
    rep = login(r, "app@acme.test", expired, mech="OAUTHBEARER")
    assert not rep.ok and (rep.status.code, rep.status.enhanced) == (535, "5.7.8")
    assert json.loads(rep.oauth_error) == {
        "status": "invalid_token", "scope": "smtp",
        "openid-configuration": "https://id.example.test/.well-known/openid-configuration"}
    rep = login(r, "app@acme.test", expired, mech="XOAUTH2")
    assert json.loads(rep.oauth_error) == {"status": "401", "schemes": "bearer",
                                           "scope": "smtp"}
    # alg none, a forged signature, another audience, another user's token, an unknown issuer
    refusals = [
        (make_token("none", claims("https://id.example.test")), "token_alg"),
        (good[1][:-4] + ("AAAA" if not good[1].endswith("AAAA") else "BBBB"), "token_signature"),
        (make_token("ES256", claims("https://es.example.test", aud="other"), key=keys["ec"][0]),
         "token_audience"),
        (make_token("HS256", claims("https://id.example.test", sub="boss@acme.test"),
                    secret=HS_SECRET), "token_identity"),
        (make_token("HS256", claims("https://evil.example.test"), secret=HS_SECRET),
         "token_issuer"),
        (make_token("RS256", claims("https://id.example.test"), key=keys["rsa"][0]), "token_alg"),
    ]
    for i, (tok, reason) in enumerate(refusals):
        rep = login(r, "app@acme.test", tok, mech="OAUTHBEARER", ip="192.0.2.%d" % (i + 10))
        assert not rep.ok and rep.status.code == 535, reason
        err = json.loads(rep.oauth_error)
        assert err["status"] == "invalid_token"
        assert ("openid-configuration" in err) == (reason != "token_issuer")
    ev = auth_failures(r, "app@acme.test", 2 + len(refusals))
    reasons = [e["attrs"]["reason"] for e in ev]
    assert reasons[:2] == ["token_expired", "token_expired"]
    assert reasons[2:] == [reason for _, reason in refusals]
    assert ev[0]["attrs"]["mechanism"] == "OAUTHBEARER"

    # a revoked credential's token no longer helps
    r.ctl("cred", "revoke", "app@acme.test")
    rep = login(r, "app@acme.test", good[0], mech="XOAUTH2", ip="192.0.2.99")
    assert not rep.ok and json.loads(rep.oauth_error)["status"] == "401"

    # no token ever reaches the log
    log = r.log("auth")
    for tok in good + [expired]:
        assert tok.split(".")[2][:16] not in log and tok.split(".")[1][:24] not in log


def test_bad_issuer_config_stops_auth(make_relay):
    r = make_relay(config_edit=lambda t: auth_section(t, """  oauth_issuers = (
    { issuer = "https://id.example.test"; audience = "sendarix"; algorithm = "HS256";
      secret = "too-short"; }
  );"""))
    proc = r.spawn("auth")
    assert proc.wait(timeout=15) == 1
    log = r.log("auth")
    assert re.search(r"sendarix\.conf:\d+: auth\.oauth_issuers: entry 1 \(.*sendarix\.conf:\d+\): "
                     r"HS256 needs a secret of at least 32 bytes", log), log
