"""DKIM from key to signature, end to end: `domain add` makes the keys and
prints the TXT records; a DNS server on loopback (dnslib) publishes them,
and auth (auth.resolver pointed at it) checks them for `domain verify`;
a message sent through the relay arrives in the sandbox with an RSA and an
Ed25519 signature that independent verifiers accept (python3-dkim, and
opendkim-testmsg where it is installed); a wrong record fails the check
without taking the verification away; a rotation brings new selectors;
the local profile's example.test signs with selector sx1; a large signed
message reaches a plain destination whole and verifiable."""
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import textwrap
import threading

import pytest

# python3-dkim (Debian's package; it brings python3-nacl for Ed25519)
sys.path.append("/usr/lib/python3/dist-packages")
import dkim  # noqa: E402
from dnslib import QTYPE, RCODE, RR, TXT  # noqa: E402
from dnslib.server import BaseResolver, DNSLogger, DNSServer  # noqa: E402

from fakemx import FakeMx  # noqa: E402
from harness import wait_for  # noqa: E402
from test_queue import route_to  # noqa: E402

USER, PASSWORD = "demo", "demo-password"


class TxtZone(BaseResolver):
    """TXT records by name (no trailing dot); other names do not exist."""

    def __init__(self):
        self.records = {}
        self.lock = threading.Lock()

    def set(self, name, value):
        with self.lock:
            if value is None:
                self.records.pop(name.lower(), None)
            else:
                self.records[name.lower()] = value

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        with self.lock:
            value = self.records.get(name)
        if value is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            # a long value travels as several strings of at most 255 bytes
            chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=5))
        return reply


@pytest.fixture
def zone():
    z = TxtZone()
    server = DNSServer(z, address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
    z.port = server.server.server_address[1]
    server.start_thread()
    yield z
    server.stop()


@pytest.fixture
def relay(make_relay, zone):
    def edit(text):
        return text.replace("auth = {", 'auth = {\n  resolver = "127.0.0.1:%d";' % zone.port, 1)
    r = make_relay(retry_base="2s", config_edit=edit)
    r.start()
    return r


def tls_context(r):
    ctx = ssl.create_default_context(cafile=r.cert)
    ctx.check_hostname = False
    return ctx


def send(r, sender, message):
    with smtplib.SMTP("127.0.0.1", r.submission, timeout=15) as s:
        s.ehlo("client.example")
        s.starttls(context=tls_context(r))
        s.ehlo("client.example")
        s.login(USER, PASSWORD)
        s.mail(sender)
        s.rcpt("someone@example.org")
        code, text = s.data(message)
    assert code == 250, text


def message(frm, subject):
    return ("From: App <%s>\r\n"
            "To: Someone <someone@example.org>\r\n"
            "Subject: %s\r\n"
            "Date: Fri, 01 Mar 2024 10:00:00 +0000\r\n"
            "Message-ID: <%s@dkim.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            "Hello  there,\r\n"
            "\r\n"
            ".a line that starts with a dot\r\n"
            "trailing spaces   \r\n"
            "\r\n" % (frm, subject, subject.replace(" ", "-"))).encode()


def signatures(data):
    """(tags dict) of each DKIM-Signature field of a stored message, in order."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    out = []
    for m in re.finditer(r"^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.M | re.I):
        value = re.sub(r"\s+", "", m.group(1))
        tags = dict(t.split("=", 1) for t in value.split(";") if "=" in t)
        out.append(tags)
    return out


def records_of(added):
    """{txt_name: txt_value} of the keys in a `domain add`/`domain dkim` document."""
    return {k["txt_name"]: k["txt_value"] for k in added}


def verify_python(data, records):
    """Each signature's result with python3-dkim, DNS answered from records."""
    def dnsfunc(name, timeout=5):
        v = records.get(name.decode().rstrip("."))
        return v.encode() if v is not None else None
    d = dkim.DKIM(data)
    out = []
    for i in range(len(signatures(data))):
        try:
            out.append(d.verify(idx=i, dnsfunc=dnsfunc))
        except dkim.ValidationError:  # a body hash that does not match, say
            out.append(False)
    return out


OPENDKIM_DNS = textwrap.dedent("""\
    import sys, time
    sys.path.append("/usr/lib/python3/dist-packages")
    from dnslib import QTYPE, RCODE, RR, TXT
    from dnslib.server import BaseResolver, DNSLogger, DNSServer
    records = dict(line.rstrip("\\n").split(" ", 1) for line in open(sys.argv[1]))
    class R(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            v = records.get(str(request.q.qname).rstrip(".").lower())
            if v is None:
                reply.header.rcode = RCODE.NXDOMAIN
            elif request.q.qtype == QTYPE.TXT:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT,
                                    rdata=TXT([v[i:i + 255] for i in range(0, len(v), 255)])))
            return reply
    s = DNSServer(R(), address="127.0.0.1", port=53, logger=DNSLogger("-request,-reply,-recv,-send,-data"))
    s.start_thread()
    open(sys.argv[2], "w").close()
    time.sleep(30)
    """)


def verify_opendkim(tmp_path, data, records):
    """opendkim-testmsg on the message, inside a network and mount namespace
    of its own whose resolver is a DNS server on its loopback serving
    records. None when that cannot be set up here; else (exit, stderr)."""
    tool = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"
    if not os.path.exists(tool) or not shutil.which("unshare"):
        return None
    (tmp_path / "ready").unlink(missing_ok=True)
    (tmp_path / "zone_server.py").write_text(OPENDKIM_DNS)
    (tmp_path / "records").write_text("".join("%s %s\n" % (k, v) for k, v in records.items()))
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (tmp_path / "msg.eml").write_bytes(data)
    script = textwrap.dedent("""\
        set -e
        ip link set lo up
        mount --bind {d}/resolv.conf /etc/resolv.conf
        /usr/bin/python3 {d}/zone_server.py {d}/records {d}/ready & server=$!
        for i in $(seq 50); do [ -e {d}/ready ] && break; sleep 0.1; done
        rc=0
        {tool} < {d}/msg.eml || rc=$?
        kill $server
        exit $rc
        """).format(d=tmp_path, tool=tool)
    try:
        r = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "unshare failed" in r.stderr or "Operation not permitted" in r.stderr:
        return None
    return r.returncode, r.stdout + r.stderr


def test_dkim_keys_dns_verification_and_signatures(relay, zone, tmp_path):
    r = relay
    r.ctl("tenant", "add", "demo")

    # the local profile's domain: vouched for by the operator, so it signs at once
    local = r.ctl("domain", "add", "example.test", "--tenant", "demo", "--verified")
    assert local["verified"] is True
    assert [k["selector"] for k in local["dkim"]] == ["sx1", "sx1e"]
    assert [k["algorithm"] for k in local["dkim"]] == ["rsa-sha256", "ed25519-sha256"]
    for k in local["dkim"]:
        assert k["txt_name"] == "%s._domainkey.example.test" % k["selector"]
    assert local["dkim"][0]["txt_value"].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", local["dkim"][1]["txt_value"])

    # a domain of our own, unverified: the text output says what to publish
    out = r.ctl_run("domain", "add", "brand.test", "--tenant", "demo", json_out=False)
    assert out.returncode == 0, out.stderr
    assert "not verified" in out.stdout
    assert "sx1._domainkey.brand.test. IN TXT (" in out.stdout
    assert "sx1e._domainkey.brand.test. IN TXT (" in out.stdout
    assert '"v=DKIM1; k=rsa; p=' in out.stdout
    assert "PRIVATE" not in out.stdout
    brand = r.ctl("domain", "dkim", "brand.test")["domain"]
    assert brand["verified"] is False
    records = records_of(brand["dkim"])
    assert set(records) == {"sx1._domainkey.brand.test", "sx1e._domainkey.brand.test"}
    listed = {d["domain"]: d for d in r.ctl("domain", "list")["domains"]}
    assert records_of(listed["brand.test"]["dkim"]) == records

    # nothing published yet: verify fails, exit 1, with the reason
    v = r.ctl_run("domain", "verify", "brand.test")
    assert v.returncode == 1, (v.stdout, v.stderr)
    doc = __import__("json").loads(v.stdout)
    assert doc["verified"] is False
    assert [c["found"] for c in doc["checks"]] == [False, False]
    assert "not verified" in v.stderr

    # published: verified
    for name, value in records.items():
        zone.set(name, value)
    v = r.ctl_run("domain", "verify", "brand.test", json_out=False)
    assert v.returncode == 0, (v.stdout, v.stderr)
    assert "brand.test is verified" in v.stdout
    doc = r.ctl("domain", "verify", "brand.test")
    assert doc["verified"] is True
    assert all(c["found"] and c["matches"] for c in doc["checks"])
    listed = {d["domain"]: d for d in r.ctl("domain", "list")["domains"]}
    assert listed["brand.test"]["verified"] is True

    # a login made now may send from both domains; both get signed
    r.ctl("cred", "add", USER, "--tenant", "demo", "--password-stdin", input=PASSWORD + "\n")
    send(r, "app@brand.test", message("app@brand.test", "brand one"))
    send(r, "app@example.test", message("app@example.test", "local one"))
    files = r.wait_maildir(2)
    by_subject = {}
    for _, data in files:
        m = re.search(rb"Subject: (.*)\r\n", data)
        by_subject[m.group(1).decode()] = data
    all_records = dict(records)
    all_records.update(records_of(local["dkim"]))

    for subject, domain in (("brand one", "brand.test"), ("local one", "example.test")):
        data = by_subject[subject]
        sigs = signatures(data)
        assert [(s["a"], s["s"], s["d"]) for s in sigs] == [
            ("rsa-sha256", "sx1", domain), ("ed25519-sha256", "sx1e", domain)], sigs
        for s in sigs:
            assert s["c"] == "relaxed/relaxed"
            assert s["h"].lower().startswith("from:from:to:subject:date:message-id")
        assert verify_python(data, all_records) == [True, True], subject
        # what a changed message gives: no pass
        tampered = data.replace(b"Hello  there", b"Hello  world")
        assert verify_python(tampered, all_records) == [False, False]

        checked = verify_opendkim(tmp_path, data, all_records)
        if checked is not None:
            code, text = checked
            assert code == 0, text
            code, text = verify_opendkim(tmp_path, tampered, all_records)
            assert code != 0 and "bad signature" in text.lower(), (code, text)

    # a wrong record: the check fails and says why, the domain stays verified
    other = local["dkim"][1]["txt_value"]
    zone.set("sx1e._domainkey.brand.test", other)
    v = r.ctl_run("domain", "verify", "brand.test")
    assert v.returncode == 1
    doc = __import__("json").loads(v.stdout)
    assert doc["verified"] is False
    by_sel = {c["selector"]: c for c in doc["checks"]}
    assert by_sel["sx1"]["matches"] is True
    assert by_sel["sx1e"]["found"] is True and by_sel["sx1e"]["matches"] is False
    assert "another key" in by_sel["sx1e"]["detail"]
    assert "another key" in v.stderr
    zone.set("sx1._domainkey.brand.test", "v=DKIM1; k=ed25519; p=" + other.split("p=")[1])
    doc = __import__("json").loads(r.ctl_run("domain", "verify", "brand.test").stdout)
    assert "expected k=rsa" in {c["selector"]: c for c in doc["checks"]}["sx1"]["detail"]
    listed = {d["domain"]: d for d in r.ctl("domain", "list")["domains"]}
    assert listed["brand.test"]["verified"] is True

    # rotation: the next selectors, new keys; their records are not published yet
    rotated = r.ctl("domain", "dkim", "brand.test", "--rotate")["domain"]
    assert [k["selector"] for k in rotated["dkim"]] == ["sx2", "sx2e"]
    assert set(records_of(rotated["dkim"]).values()).isdisjoint(records.values())
    v = r.ctl_run("domain", "verify", "brand.test")
    assert v.returncode == 1
    assert [c["txt_name"] for c in __import__("json").loads(v.stdout)["checks"]] == [
        "sx2._domainkey.brand.test", "sx2e._domainkey.brand.test"]
    for name, value in records_of(rotated["dkim"]).items():
        zone.set(name, value)
    assert r.ctl("domain", "verify", "brand.test")["verified"] is True

    # no private key ever crossed to the CLI, and none is in auth's log
    assert "PRIVATE KEY" not in r.log("auth")
    assert "PRIVATE KEY" not in r.log("delivery")


def test_unknown_domains_and_usage(relay):
    r = relay
    v = r.ctl_run("domain", "verify", "nowhere.test")
    assert v.returncode == 1
    assert "not found" in v.stderr
    v = r.ctl_run("domain", "dkim", "nowhere.test")
    assert v.returncode == 1
    assert r.ctl_run("domain", "verify").returncode == 2


def test_large_signed_message_to_a_plain_destination(make_relay):
    # the signature goes out in front of a body sent from delivery's memory;
    # the destination reads late, so part of it waits in the output buffer
    mx = FakeMx(read_pause=0.3)
    try:
        r = make_relay(config_edit=route_to(mx.port))
        r.start()
        r.ctl("tenant", "add", "demo")
        local = r.ctl("domain", "add", "example.test", "--tenant", "demo", "--verified")
        r.ctl("cred", "add", USER, "--tenant", "demo", "--password-stdin",
              input=PASSWORD + "\n")
        lines = b"".join((b"." if i % 400 == 0 else b"") + b"%06d " % i + b"y" * 90 + b"\r\n"
                         for i in range(30000))
        text = message("app@example.test", "large one") + lines
        send(r, "app@example.test", text)
        wait_for(lambda: len(mx.bodies) >= 1, timeout=60, what="the large message")
        data = mx.bodies[0]
        assert data.startswith(b"DKIM-Signature:") and data.endswith(lines)
        assert verify_python(data, records_of(local["dkim"])) == [True, True]
        assert mx.unknown == []
    finally:
        mx.close()
