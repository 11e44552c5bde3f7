"""What latency.py, memory.py and hostile.py share: a `creepy 9pix` of their own, its memory
as the kernel counts it, and another client's Tstat loop timed in a process of its own.

    srv = Served(tmp, ["-c", "64"])      # fmt a fresh disk in tmp, serve it on loopback TCP
    loop = StatLoop(srv.port)            # Tstat requests, one at a time, until stop()
    ...
    vm(srv.pid, "VmHWM")                 # bytes
    samples = loop.stop()
    percentiles(samples, t0, t1)         # of the round trips sent in [t0, t1]
    srv.stop()
"""

import collections
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from creepy.ninep import codec                       # noqa: E402

MiB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm(pid, field):
    """A memory figure of process pid from /proc/pid/status (VmRSS, VmHWM...), in bytes."""
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Served:
    """A `creepy 9pix -a` of our own on loopback TCP and a Unix socket in tmp, serving disk
    (by default a fresh one of `size` made in tmp), with `flags` added (-c, -i, -n...).

    Its log is read by a thread all along (a server that logs a line per connection must never
    block on a full pipe): `lines` keeps the last ones, `count(text)` how many held text."""

    def __init__(self, tmp, flags=(), disk=None, size="2G"):
        if disk is None:
            disk = os.path.join(tmp, "disk")
            subprocess.run([sys.executable, "-m", "creepy", "fmt", "-s", size, disk],
                           check=True, cwd=REPO, capture_output=True)
        self.port = free_port()
        self.addr = f"tcp!127.0.0.1!{self.port}"
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "creepy", "9pix", "-a", "-A", self.addr,
             "-S", os.path.join(tmp, "sock"), *flags, disk],
            cwd=REPO, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.lines = collections.deque(maxlen=200)
        self._seen = collections.Counter()
        self._watch = []
        for line in self.proc.stderr:
            self.lines.append(line)
            if " serving " in line:
                break
        else:
            raise SystemExit("creepy 9pix did not start:\n" + "".join(self.lines))
        self.started_s = time.perf_counter() - t0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def watch(self, *texts):
        """Count the log lines holding each of texts from now on (see count)."""
        self._watch.extend(texts)

    def count(self, text):
        return self._seen[text]

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            for text in self._watch:
                if text in line:
                    self._seen[text] += 1

    def stop(self, timeout=120):
        """SIGTERM (9pix syncs and exits), then its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        return self.proc.returncode


def stat_loop(port, stop, out):
    """Tstat of the attach root, one at a time, until stop is set; out gets a list of
    (sent at, seconds) of every round trip, and why the loop ended early (None if it did not)."""
    samples = []
    try:
        _stat_loop(port, stop, samples)
    except Exception as e:
        out.put((samples, f"{e.__class__.__name__}: {e}"))
    else:
        out.put((samples, None))


def _stat_loop(port, stop, samples):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fr = codec.Framer(1 << 16)

    def rpc(msg):
        s.sendall(codec.encode(msg))
        while True:
            for frame in fr.frames():
                return codec.decode(frame)
            buf = fr.get_buffer(1 << 16)
            n = s.recv_into(buf)
            if not n:
                raise ConnectionError("server hung up")
            fr.buffer_updated(n)

    rpc(codec.Tversion(codec.NOTAG, 1 << 16, "9P2000"))
    rpc(codec.Tattach(1, 0, codec.NOFID, "bench", ""))
    msg = codec.Tstat(2, 0)
    while not stop.is_set():
        t0 = time.monotonic()
        r = rpc(msg)
        samples.append((t0, time.monotonic() - t0))
        if r.__class__ is not codec.Rstat:
            raise ConnectionError(f"Tstat answered {r}")
    s.close()


class StatLoop:
    """stat_loop on its own connection, in a process of its own (no GIL shared with ours)."""

    def __init__(self, port):
        self._stop = multiprocessing.Event()
        self._out = multiprocessing.Queue()
        self._proc = multiprocessing.Process(target=stat_loop, args=(port, self._stop, self._out))
        self._proc.start()

    def stop(self, timeout=120):
        """Stop the loop: every (sent at, seconds) it measured, and why it ended early (None
        if it ran until now)."""
        self._stop.set()
        samples, error = self._out.get(timeout=timeout)
        self._proc.join()
        return samples, error


def percentiles(samples, lo, hi):
    """(count, p50, p99, max) in seconds of the round trips sent in [lo, hi]; None if none."""
    xs = sorted(d for t, d in samples if lo <= t <= hi)
    if not xs:
        return None
    return (len(xs), xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))], xs[-1])
