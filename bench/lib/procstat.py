"""CPU time and memory of a group of processes, read from /proc.

A group's CPU time at a moment is what its live processes have used
(utime + stime) plus what its reaped children used (cutime + cstime of the
processes that reaped them): a Postfix smtpd that exits between two readings
is counted through master, which waits for it. The difference between two
readings is the group's CPU over the interval, whatever came and went.
"""
import os
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    # the command name is in parentheses and may hold spaces
    rest = s[s.rindex(")") + 2:].split()
    return rest  # rest[0] is field 3 (state)


def ppid(pid):
    return int(_stat(pid)[1])


def children(parent):
    """Direct children of parent (pids)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if ppid(int(name)) == parent:
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_seconds(pids, reapers=()):
    """utime + stime of pids, plus cutime + cstime of reapers, in seconds."""
    ticks = 0
    for pid in pids:
        try:
            f = _stat(pid)
        except (OSError, ValueError, IndexError):
            continue
        ticks += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
        if pid in reapers:
            ticks += int(f[13]) + int(f[14])  # cutime, cstime (fields 16, 17)
    return ticks / float(TICK)


def status(pid, keys):
    """The integer fields keys of /proc/PID/status (KiB for the memory ones);
    those it has not, or none once the process is gone, are left out."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in keys:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def rss_kib(pid):
    return status(pid, ("VmRSS",)).get("VmRSS", 0)


def pss_kib(pid):
    """Proportional set size: shared pages divided among the processes sharing them."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemSampler(threading.Thread):
    """Samples the summed RSS and PSS of a group (pids_fn() gives its pids) until stop()."""

    def __init__(self, pids_fn, interval=0.25):
        super().__init__(daemon=True)
        self.pids_fn = pids_fn
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self._halt = threading.Event()

    def sample(self):
        pids = self.pids_fn()
        rss = sum(rss_kib(p) for p in pids)
        pss = sum(pss_kib(p) for p in pids)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(pids))

    def run(self):
        while not self._halt.is_set():
            try:
                self.sample()
            except OSError:
                pass
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()
        try:
            self.sample()
        except OSError:
            pass


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def wait_until(pred, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
