"""A small client of the Sendarix bus, for tests.

The bus carries one protobuf ``sendarix.v1.Envelope`` per ZeroMQ message
(version 1, a request id, the sender's name and exactly one body), and,
when the body has bytes of its own (a message body), a second frame with
them. This module speaks that framing from Python, as libshared/ipc/bus.c
does from C, so a test can stand in for any service: send a DeliveryJob to
the router as queue would, ping a service, read a reply by request id.

The Python classes are compiled from proto/sendarix/v1/*.proto with
``protoc --python_out`` into build/e2e/pyproto the first time this module is
imported (and again whenever a .proto file is newer than its output).
Debian packages: protobuf-compiler, python3-protobuf, python3-zmq.

Usage::

    from buslib import Bus, msg
    bus = Bus("ipc:///.../run/router-1.sock")
    job = msg("DeliveryJob", job_id="j1", message_id="m1", domain="example.org",
              mail_from="a@example.test",
              recipients=[msg("DeliveryRecipient", index=0, address="b@example.org")])
    body, result, payload = bus.request("delivery_job", job, payload=b"Subject: x\\r\\n\\r\\nhi\\r\\n",
                                        timeout=30)
    assert body == "delivery_result"
    bus.close()

``request`` matches the reply by request id, never by order; replies that
belong to no waiting request are kept in ``bus.unmatched``.
"""
import fcntl
import glob
import itertools
import os
import random
import subprocess
import sys
import time

import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
PROTO_FILES = sorted(glob.glob(os.path.join(PROTO_DIR, "sendarix", "v1", "*.proto")))
OUT_DIR = os.path.join(ROOT, "build", "e2e", "pyproto")
VERSION = 1


def _stale():
    """True when some .proto file has no compiled module or a newer one."""
    for p in PROTO_FILES:
        name = os.path.splitext(os.path.basename(p))[0] + "_pb2.py"
        out = os.path.join(OUT_DIR, "sendarix", "v1", name)
        if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(p):
            return True
    return False


def compile_protos():
    """Compile the schemas into OUT_DIR if needed (safe with parallel test processes)."""
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stale():
            subprocess.run(["protoc", "-I" + PROTO_DIR, "--python_out=" + OUT_DIR] + PROTO_FILES,
                           check=True)
            # make the output importable as regular packages
            for d in ("sendarix", os.path.join("sendarix", "v1")):
                init = os.path.join(OUT_DIR, d, "__init__.py")
                if not os.path.exists(init):
                    open(init, "w").close()


compile_protos()
if OUT_DIR not in sys.path:
    sys.path.insert(0, OUT_DIR)

from sendarix.v1 import common_pb2, control_pb2, delivery_pb2, envelope_pb2  # noqa: E402
from sendarix.v1 import events_pb2  # noqa: E402

_MODULES = [envelope_pb2, common_pb2, control_pb2, delivery_pb2, events_pb2]
for _name in ("auth_pb2", "queue_pb2"):
    try:
        _MODULES.append(__import__("sendarix.v1." + _name, fromlist=[_name]))
    except ImportError:
        pass

Envelope = envelope_pb2.Envelope


def msg_class(name):
    """The generated class for a message name ("DeliveryJob")."""
    for m in _MODULES:
        cls = getattr(m, name, None)
        if cls is not None:
            return cls
    raise KeyError("no message %r in proto/sendarix/v1" % name)


def msg(name, **fields):
    """Build a message by name: msg("DeliveryRecipient", index=0, address="a@b")."""
    return msg_class(name)(**fields)


class BusTimeout(Exception):
    pass


class Bus:
    """A DEALER connected to one bus endpoint (a service's ROUTER socket)."""

    _ids = itertools.count(random.randrange(1 << 40, 1 << 48))

    def __init__(self, endpoint, sender="tests/1", context=None):
        self.endpoint = endpoint
        self.sender = sender
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.unmatched = []

    def close(self):
        self.sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, body_name, message, payload=None, request_id=None):
        """Send one envelope (and payload bytes as a second frame); return its request id."""
        rid = next(self._ids) if request_id is None else request_id
        env = Envelope(version=VERSION, request_id=rid, sender=self.sender)
        getattr(env, body_name).CopyFrom(message)
        frames = [env.SerializeToString()]
        if payload is not None:
            frames.append(bytes(payload))
        self.sock.send_multipart(frames)
        return rid

    def recv(self, timeout=5.0):
        """Next message: (request_id, body_name, message, payload or None)."""
        if not self.sock.poll(int(timeout * 1000)):
            raise BusTimeout("nothing from %s within %.1fs" % (self.endpoint, timeout))
        frames = self.sock.recv_multipart()
        env = Envelope()
        env.ParseFromString(frames[0])
        body = env.WhichOneof("body")
        payload = frames[1] if len(frames) > 1 else None
        return env.request_id, body, getattr(env, body) if body else None, payload

    def wait_reply(self, request_id, timeout=5.0):
        """The reply to request_id: (body_name, message, payload). Others go to unmatched."""
        for i, (rid, body, m, payload) in enumerate(self.unmatched):
            if rid == request_id:
                del self.unmatched[i]
                return body, m, payload
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise BusTimeout("no reply to request %d from %s within %.1fs"
                                 % (request_id, self.endpoint, timeout))
            rid, body, m, payload = self.recv(left)
            if rid == request_id:
                return body, m, payload
            self.unmatched.append((rid, body, m, payload))

    def request(self, body_name, message, payload=None, timeout=5.0):
        """Send and wait for the reply with the same request id: (body_name, message, payload)."""
        rid = self.send(body_name, message, payload)
        return self.wait_reply(rid, timeout)

    def ping(self, timeout=2.0):
        """ServicePong of the service behind the endpoint, or None when it does not answer."""
        try:
            body, m, _ = self.request("service_ping", msg("ServicePing"), timeout=timeout)
        except BusTimeout:
            return None
        return m if body == "service_pong" else None


def published_events(sock, n, timeout=10):
    """Up to n events read from a PULL socket that services publish to: each
    EventPublish holds a lone event or the events of one loop turn."""
    out = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        if sock.poll(100):
            env = Envelope()
            env.ParseFromString(sock.recv_multipart()[0])
            pub = env.event_publish
            out.extend(([pub.event] if pub.HasField("event") else []) + list(pub.events))
    return out


def pong_stats(pong):
    """A ServicePong's stats as a dict."""
    return {a.key: a.value for a in pong.stats}


def wait_ping(endpoint, timeout=15.0):
    """Wait until the service at endpoint answers a ServicePing; return its pong."""
    deadline = time.time() + timeout
    with Bus(endpoint) as bus:
        while time.time() < deadline:
            pong = bus.ping(timeout=0.5)
            if pong is not None:
                return pong
    raise BusTimeout("%s did not answer a ping within %.1fs" % (endpoint, timeout))
