"""A small authoritative DNS server for tests (python3-dnslib).

It answers, on 127.0.0.1 and a free port, over UDP and TCP, from records
the test gives and may change at any time. A name with no records of any
type (and nothing below it) is NXDOMAIN; a known name without records of
the asked type is NOERROR with no answer (NODATA). Names can be told to
fail (SERVFAIL) or to go unanswered (a timeout for the client). Every
question is recorded, so a test can tell what was asked.

Usage::

    from dnsserver import DnsServer
    with DnsServer() as dns:
        dns.add("example.test", "MX", (10, "mx1.example.test"))
        dns.add("mx1.example.test", "A", "127.0.0.2")
        dns.add("_mta-sts.example.test", "TXT", "v=STSv1; id=1;")
        dns.add("null.test", "MX", (0, "."))          # RFC 7505 null MX
        dns.servfail.add("broken.test")
        resolver = dns.address                          # "127.0.0.1:PORT"

Debian package: python3-dnslib.
"""
import socket
import socketserver
import struct
import threading

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, CNAME, DNSRecord

TYPES = {"A": QTYPE.A, "AAAA": QTYPE.AAAA, "MX": QTYPE.MX, "TXT": QTYPE.TXT,
         "CNAME": QTYPE.CNAME}
UDP_MAX = 512


def _norm(name):
    return name.lower().rstrip(".")


def _rdata(rtype, value):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, host = value
        return MX(host if host != "." else ".", pref)
    if rtype == "TXT":
        # a string, or a list of strings that form one record
        parts = [value] if isinstance(value, str) else list(value)
        return TXT([p.encode() if isinstance(p, str) else p for p in parts])
    if rtype == "CNAME":
        return CNAME(value)
    raise ValueError("unsupported record type %s" % rtype)


class DnsServer:
    def __init__(self, host="127.0.0.1", ttl=1):
        self.host = host
        self.ttl = ttl
        self.lock = threading.Lock()
        self.records = {}      # name -> list of (type, value)
        self.servfail = set()  # names answered with SERVFAIL
        self.drop = set()      # names never answered
        self.queries = []      # (name, type name, "udp" or "tcp")
        self._udp = self._tcp = None
        self._threads = []

    # ---- records ----

    def add(self, name, rtype, value):
        with self.lock:
            self.records.setdefault(_norm(name), []).append((rtype.upper(), value))

    def set(self, name, rtype, values):
        """Replace name's records of rtype with values (a list)."""
        rtype = rtype.upper()
        with self.lock:
            recs = [r for r in self.records.get(_norm(name), []) if r[0] != rtype]
            recs += [(rtype, v) for v in values]
            self.records[_norm(name)] = recs

    def remove(self, name, rtype=None):
        with self.lock:
            n = _norm(name)
            if rtype is None:
                self.records.pop(n, None)
            else:
                self.records[n] = [r for r in self.records.get(n, []) if r[0] != rtype.upper()]

    def asked(self, name, rtype=None):
        """How many questions for name (of rtype) arrived."""
        n = _norm(name)
        with self.lock:
            return sum(1 for q in self.queries if q[0] == n and (rtype is None or q[1] == rtype))

    # ---- answering ----

    def _exists(self, name):
        if self.records.get(name):
            return True
        suffix = "." + name
        return any(k.endswith(suffix) and v for k, v in self.records.items())

    def answer(self, data, transport):
        """The reply bytes for a query, or None to stay silent."""
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        reply = req.reply()  # QR, AA, RD copied
        reply.header.aa = 1
        reply.header.ra = 0
        q = req.q
        name = _norm(str(q.qname))
        qtype = QTYPE.get(q.qtype)
        with self.lock:
            self.queries.append((name, qtype, transport))
            if name in self.drop:
                return None
            if name in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply.pack()
            if not self._exists(name):
                reply.header.rcode = RCODE.NXDOMAIN
                return reply.pack()
            owner = name
            for _ in range(8):  # a CNAME chain inside the zone is followed
                recs = self.records.get(owner, [])
                cname = [v for t, v in recs if t == "CNAME"]
                if cname and q.qtype != QTYPE.CNAME:
                    reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(cname[0]), ttl=self.ttl))
                    owner = _norm(cname[0])
                    continue
                for rtype, value in recs:
                    if TYPES.get(rtype) == q.qtype:
                        reply.add_answer(RR(owner, TYPES[rtype], rdata=_rdata(rtype, value),
                                            ttl=self.ttl))
                break
        return reply.pack()

    # ---- serving ----

    def start(self):
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                out = server.answer(data, "udp")
                if out is None:
                    return
                if len(out) > UDP_MAX:
                    rec = DNSRecord.parse(out)
                    rec.rr = []
                    rec.header.tc = 1
                    out = rec.pack()
                sock.sendto(out, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.settimeout(5)
                try:
                    while True:
                        head = _recv_exact(sock, 2)
                        if head is None:
                            return
                        data = _recv_exact(sock, struct.unpack(">H", head)[0])
                        if data is None:
                            return
                        out = server.answer(data, "tcp")
                        if out is None:
                            continue
                        sock.sendall(struct.pack(">H", len(out)) + out)
                except OSError:
                    return

        class UdpServer(socketserver.ThreadingUDPServer):
            daemon_threads = True
            allow_reuse_address = True

        class TcpServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(50):
            udp = UdpServer((self.host, 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = TcpServer((self.host, port), Tcp)
            except OSError:
                udp.server_close()
                continue
            self._udp, self._tcp = udp, tcp
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        for srv in (self._udp, self._tcp):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        self._udp = self._tcp = None

    @property
    def port(self):
        return self._udp.server_address[1]

    @property
    def address(self):
        """The resolver setting for delivery: "127.0.0.1:PORT"."""
        return "%s:%d" % (self.host, self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


if __name__ == "__main__":
    # a quick look by hand: python3 dnsserver.py, then dig @127.0.0.1 -p PORT example.test MX
    with DnsServer() as d:
        d.add("example.test", "MX", (10, "mx1.example.test"))
        d.add("mx1.example.test", "A", "127.0.0.2")
        print(d.address, flush=True)
        threading.Event().wait()
