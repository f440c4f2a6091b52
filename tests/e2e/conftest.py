"""pytest fixtures for the end-to-end tests: a relay per test."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Relay  # noqa: E402


@pytest.fixture
def make_relay(request):
    """Factory: make_relay(retry_base="2s", config_edit=None) -> Relay (not started)."""
    relays = []

    def make(**kw):
        r = Relay(request.node.name[:40].replace("[", "-").replace("]", ""), **kw)
        relays.append(r)
        return r

    yield make
    for r in relays:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            for key in list(r.procs):
                sys.stderr.write("---- %s log ----\n%s\n" % (key, r.log(key)[-4000:]))
        r.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
