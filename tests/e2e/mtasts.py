"""A test certificate authority and a small HTTPS server for MTA-STS policies.

TestCA makes a CA (a key and a self-signed certificate) with the openssl
command and issues server certificates for any list of names; its
certificate is what a test gives delivery as tls_ca_file, so the
sandboxes' certificates (for their MX names) and the policy server's
certificates (for mta-sts.<domain>) verify, and nothing else does.

MtaStsServer serves https://mta-sts.<domain>/.well-known/mta-sts.txt on a
loopback address and a free port, choosing the certificate by the name
the client asks for (SNI), with whatever body, status and content type
the test sets per domain; it counts the fetches.

Usage::

    ca = TestCA(tmpdir)
    cert, key = ca.issue(["mx1.example.test"])
    with MtaStsServer(ca, host="127.0.0.6") as sts:
        sts.set_policy("example.test", "version: STSv1\\nmode: enforce\\n"
                       "mx: mx1.example.test\\nmax_age: 86400\\n")
        # delivery: mta_sts_port = sts.port; DNS: mta-sts.example.test A 127.0.0.6
        # and _mta-sts.example.test TXT "v=STSv1; id=1;"
"""
import http.server
import os
import re
import ssl
import subprocess
import threading


class TestCA:
    __test__ = False  # not a pytest test class

    def __init__(self, directory, name="Sendarix Test CA"):
        self.dir = os.path.join(directory, "test-ca")
        os.makedirs(self.dir, exist_ok=True)
        self.cert = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        self._serial = 1
        self._lock = threading.Lock()
        if not os.path.exists(self.cert):
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                     "-subj", "/CN=%s" % name, "-keyout", self.key, "-out", self.cert,
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, names, tag=None):
        """A certificate for names (DNS names) signed by this CA: (cert path, key path)."""
        with self._lock:
            serial = self._serial
            self._serial += 1
        tag = tag or re.sub(r"[^a-z0-9.-]", "_", names[0].lower())
        base = os.path.join(self.dir, "%s-%d" % (tag, serial))
        key, csr, cert, ext = base + ".key", base + ".csr", base + ".pem", base + ".ext"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % names[0],
                 "-keyout", key, "-out", csr)
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\n" % ",".join("DNS:" + n for n in names))
            f.write("extendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-set_serial", str(1000 + serial), "-days", "30", "-out", cert,
                 "-extfile", ext)
        os.chmod(key, 0o600)
        return cert, key


def _openssl(*args):
    subprocess.run(("openssl",) + args, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


class MtaStsServer:
    PATH = "/.well-known/mta-sts.txt"

    def __init__(self, ca, host="127.0.0.1"):
        self.ca = ca
        self.host = host
        self.lock = threading.Lock()
        self.policies = {}   # domain -> (status, body bytes, content type)
        self.fetches = []    # (domain, path)
        self._contexts = {}  # server name -> SSLContext
        self._httpd = None

    def set_policy(self, domain, body, status=200, content_type="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        with self.lock:
            self.policies[domain.lower()] = (status, body, content_type)

    def fetched(self, domain):
        with self.lock:
            return sum(1 for d, _ in self.fetches if d == domain.lower())

    def _context_for(self, name):
        with self.lock:
            ctx = self._contexts.get(name)
        if ctx is None:
            cert, key = self.ca.issue([name])
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert, key)
            with self.lock:
                self._contexts[name] = ctx
        return ctx

    def start(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                domain = host[len("mta-sts."):] if host.startswith("mta-sts.") else ""
                with server.lock:
                    server.fetches.append((domain, self.path))
                    entry = server.policies.get(domain)
                if entry is None or self.path != server.PATH:
                    entry = (404, b"not found\n", "text/plain")
                status, body, ctype = entry
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        default = self._context_for("mta-sts.default.test")

        def sni(sock, name, ctx):
            if name:
                sock.context = server._context_for(name.lower())

        default.sni_callback = sni

        class Httpd(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                # the handshake runs in the request's thread, not in accept()
                try:
                    tls = default.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                try:
                    super().finish_request(tls, client_address)
                finally:
                    try:
                        tls.close()
                    except OSError:
                        pass

        self._httpd = Httpd((self.host, 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self):
        return self._httpd.server_address[1]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
