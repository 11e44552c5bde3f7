"""The real file server as a subprocess, for tests that drive it over the wire.

    srv = Server9pix(tmp_path)          # formats tmp_path/disk (256 MiB, 16 KiB blocks)
    srv.start()                         # creepy 9pix -a -A tcp!127.0.0.1!PORT -S .../sock -i 3600
    ...                                 # srv.tcp (host, port), srv.unix (socket path)
    srv.kill()                          # SIGKILL: no sync, what is on disk is what was committed
    srv.start()                         # the same disk, the same addresses when possible
    srv.stop()                          # SIGTERM: the server syncs and exits 0

`auth=True` starts it without -a: Unix-socket clients are who their peer credentials say and
TCP attaches are refused.  Start-up is awaited by reading the server's stderr until it logs
"serving ..." (it logs that once every listener is up), never by sleeping; everything the
server wrote to stderr is kept in `srv.stderr` and put into every failure message.
"""

import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: how long a start or a stop may take before the test fails (a hang, not a measurement)
DEADLINE = 60.0


class ServerError(AssertionError):
    pass


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:        # the event loops 9pix can run on (CREEPY_LOOP)
    import uvloop  # noqa: F401
    LOOPS = ["asyncio", "uvloop"]
except ImportError:
    LOOPS = ["asyncio"]


def creepy_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def format_disk(path, size="256M", bsize="16K"):
    """`creepy fmt -s size -b bsize path` as a subprocess (as a user would run it)."""
    r = subprocess.run([sys.executable, "-m", "creepy", "fmt", "-s", size, "-b", bsize,
                        str(path)], capture_output=True, text=True, env=creepy_env(),
                       timeout=DEADLINE)
    if r.returncode != 0:
        raise ServerError(f"creepy fmt failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout + r.stderr


class Server9pix:
    """One disk in a directory, served by `creepy 9pix` run as a child process.

    env: more environment for the server (CREEPY_LOOP...); nofile: (soft, hard) limits on
    open files (RLIMIT_NOFILE) to start it with."""

    def __init__(self, dirpath, *, auth=False, interval=3600, size="256M", bsize="16K",
                 extra=(), fmt=True, env=None, nofile=None):
        self.dir = str(dirpath)
        self.disk = os.path.join(self.dir, "disk")
        self.unix = os.path.join(self.dir, "sock")
        if len(self.unix.encode()) > 100:
            raise ServerError(f"socket path too long for AF_UNIX: {self.unix}")
        self.auth = auth
        self.interval = interval
        self.extra = list(extra)
        self.env = dict(env or {})     # more environment for the server (CREEPY_LOOP...)
        self.nofile = nofile
        self.port = None
        self.proc = None
        self.stderr_lines = []      # every line from every run, "--- run N" between runs
        self.runs = 0
        self.start_s = None         # seconds the last start took, until "serving"
        self._cond = threading.Condition()
        self._reader = None
        if fmt:
            self.fmt_output = format_disk(self.disk, size, bsize)

    # --- addresses --------------------------------------------------------------------------

    @property
    def tcp(self):
        return ("127.0.0.1", self.port)

    @property
    def tcp_dial(self):
        return f"tcp!127.0.0.1!{self.port}"

    @property
    def unix_dial(self):
        return f"unix!{self.unix}"

    def dialstring(self, transport):
        return self.tcp_dial if transport == "tcp" else self.unix_dial

    def connect_socket(self, transport):
        """A plain connected socket (for py9p, which takes one).

        It stays in blocking mode, where send() sends everything (py9p calls send, not
        sendall), but a receive that waits longer than DEADLINE fails (SO_RCVTIMEO): a server
        that never answers fails the test instead of hanging it."""
        if transport == "tcp":
            s = socket.create_connection(self.tcp, timeout=DEADLINE)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(DEADLINE)
            s.connect(self.unix)
        s.settimeout(None)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                     struct.pack("ll", int(DEADLINE), 0))
        return s

    # --- life -------------------------------------------------------------------------------

    def argv(self):
        a = [sys.executable, "-m", "creepy", "9pix"]
        if not self.auth:
            a.append("-a")
        a += ["-A", self.tcp_dial, "-S", self.unix, "-i", str(self.interval)]
        return a + self.extra + [self.disk]

    @property
    def stderr(self):
        with self._cond:
            return "".join(self.stderr_lines)

    def said(self, text):
        """Wait until the server has logged text (it logs as it goes: no clock involved)."""
        with self._cond:
            assert self._cond.wait_for(lambda: text in "".join(self.stderr_lines), DEADLINE), \
                "".join(self.stderr_lines)

    def start(self):
        """Start the server and return once it accepts connections on TCP and the socket."""
        if self.running():
            raise ServerError("server already running")
        last = None
        for attempt in range(5):
            if self.port is None or attempt > 0:
                self.port = free_port()
            ok, why = self._start_once()
            if ok:
                return self
            last = why
            if "address already in use" not in why.lower():
                break
        raise ServerError(f"creepy 9pix did not start: {last}\n--- stderr:\n{self.stderr}")

    def _start_once(self):
        self.runs += 1
        with self._cond:
            self.stderr_lines.append(f"--- run {self.runs}: {' '.join(self.argv())}\n")
            mark = len(self.stderr_lines)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**creepy_env(), **self.env}, cwd=self.dir,
                                     preexec_fn=self._limits if self.nofile else None)
        self._reader = threading.Thread(target=self._collect, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + DEADLINE
        with self._cond:
            while True:
                new = self.stderr_lines[mark:]
                if any(" serving " in ln for ln in new):
                    self.start_s = time.perf_counter() - t0
                    return True, ""
                if self.proc.poll() is not None and not self._reader.is_alive():
                    return False, f"exited with status {self.proc.returncode}: {''.join(new)}"
                left = deadline - time.monotonic()
                if left <= 0:
                    self._hard_kill()
                    return False, "no 'serving' line within the deadline"
                self._cond.wait(left)

    def _limits(self):
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def _collect(self, proc):
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            with self._cond:
                self.stderr_lines.append(line)
                self._cond.notify_all()
        proc.stderr.close()
        proc.wait()
        with self._cond:
            self._cond.notify_all()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _hard_kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)

    def send_signal(self, sig):
        """Send sig, wait for the exit, return the exit status (negative: killed by a signal)."""
        if self.proc is None:
            raise ServerError("server not started")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self._hard_kill()
            raise ServerError(f"server ignored {signal.Signals(sig).name}\n{self.stderr}")
        if self._reader is not None:
            self._reader.join(DEADLINE)
        return rc

    def kill(self):
        """SIGKILL: the server dies at once, nothing is synced."""
        return self.send_signal(signal.SIGKILL)

    def stop(self):
        """SIGTERM: the server syncs and exits; fails unless it exits 0."""
        rc = self.send_signal(signal.SIGTERM)
        if rc != 0:
            raise ServerError(f"server exited with {rc} on SIGTERM\n{self.stderr}")
        return rc

    def restart(self, sig=signal.SIGKILL):
        self.send_signal(sig)
        return self.start()

    def close(self):
        """For fixture teardown: stop whatever is still running."""
        if self.running():
            try:
                self.stop()
            except ServerError:
                self._hard_kill()

    def check_alive(self):
        if not self.running():
            raise ServerError(f"server died (status {self.proc.returncode})\n{self.stderr}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def root_is_owner(srv, more=""):
    """Write /root/users on srv (running) so that numeric user 0 (Linux's root, and what
    py9p's 9P2000.L attach sends) is the server's owner; `more` adds lines.  The owner."""
    from creepy.ninep.client import SyncClient
    with SyncClient(srv.unix_dial) as c:
        owner = c.stat_path("").uid
        c.write_file("users", f"0:{owner}:{owner}:\n1:adm:adm:{owner}\n2:sys::{owner}\n"
                              f"3:none::\n{more}".encode())
    return owner
