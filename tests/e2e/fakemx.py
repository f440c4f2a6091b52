"""A scriptable SMTP destination on 127.0.0.1 for end-to-end tests."""
import re
import socketserver
import threading
import time


class FakeMx:
    """SMTP server on 127.0.0.1. rcpt_policy(peer_ip, rcpt) -> None (250) or (code, text);
    a 421 closes the connection. Accepted messages land in self.messages as
    (peer_ip, rcpt list, time) and their text, dot-unstuffed, in self.bodies.
    data_delay holds each reply to the final dot that many seconds; data_gate
    (a threading.Event) holds it until the gate is set; read_pause waits that
    long after the 354 before reading the text, so the sender's socket fills.
    Lines that are no command it knows are kept in self.unknown."""

    def __init__(self, rcpt_policy=None, data_delay=0.0, data_gate=None, read_pause=0.0):
        self.rcpt_policy = rcpt_policy or (lambda ip, rcpt: None)
        self.data_delay = data_delay
        self.data_gate = data_gate
        self.read_pause = read_pause
        self.messages = []
        self.bodies = []
        self.unknown = []
        self.rcpts = []  # (peer_ip, rcpt, time, code) for every RCPT
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        mx = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                mx.session(self.rfile, self.wfile, self.client_address[0])

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            # the default listen backlog (5) drops the SYNs of a burst of
            # connections, and their retries can outlast the greeting timeout
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def session(self, rfile, wfile, ip):
        def say(line):
            wfile.write((line + "\r\n").encode())
            wfile.flush()
        say("220 fake.mx.test ESMTP")
        rcpts = []
        while True:
            line = rfile.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").strip()
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                say("250 fake.mx.test")
            elif verb == "MAIL":
                rcpts = []
                say("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpt = re.search(r"<([^>]*)>", cmd).group(1)
                answer = self.rcpt_policy(ip, rcpt)
                with self.lock:
                    self.rcpts.append((ip, rcpt, time.time(), answer[0] if answer else 250))
                if answer:
                    say("%d %s" % answer)
                    if answer[0] == 421:
                        return
                else:
                    rcpts.append(rcpt)
                    say("250 2.1.5 ok")
            elif verb == "DATA":
                if not rcpts:
                    say("503 5.5.1 no valid recipients")
                    continue
                say("354 go ahead")
                with self.lock:
                    self.active += 1
                    self.max_active = max(self.max_active, self.active)
                if self.read_pause:
                    time.sleep(self.read_pause)
                lines = []
                while True:
                    l = rfile.readline()
                    if not l or l == b".\r\n":
                        break
                    lines.append(l[1:] if l.startswith(b"..") else l)
                if self.data_delay:
                    time.sleep(self.data_delay)
                if self.data_gate:
                    self.data_gate.wait(60)
                with self.lock:
                    self.active -= 1
                    self.messages.append((ip, list(rcpts), time.time()))
                    self.bodies.append(b"".join(lines))
                say("250 2.0.0 queued")
            elif verb == "RSET":
                rcpts = []
                say("250 2.0.0 ok")
            elif verb == "NOOP":
                say("250 2.0.0 ok")
            elif verb == "QUIT":
                say("221 2.0.0 bye")
                return
            else:
                with self.lock:
                    self.unknown.append(cmd)
                say("502 5.5.2 not implemented")

    def delivered_to(self, domain):
        with self.lock:
            return [(ip, r, t) for ip, rcpts, t in self.messages for r in rcpts
                    if r.endswith("@" + domain)]
