"""`creepy con`: the console of a running server, driven as a user drives it.

Every test runs `creepy con` as a subprocess against a real `creepy 9pix` (or the 9pix and rip
pair of test_arch for the archive), and checks its output and exit status: scripts from -c
and from standard input, the three failure shapes, halt, the default posted service, and the
interactive prompt on a pseudo-terminal (line editing is readline's; what we check is the
prompt, the answers, and output of other console users arriving between commands).
"""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from creepy.ninep.client import SyncClient
from creepy.ninep.dial import getuser
from servers import DEADLINE, Server9pix, creepy_env
from test_arch import Pair


def con(*args, env=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "creepy", "con", *args], input=stdin,
                          capture_output=True, text=True, env=env or creepy_env(),
                          timeout=DEADLINE)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server9pix(tmp_path_factory.mktemp("con"))
    s.start()
    yield s
    s.close()


def test_commands_from_c_run_in_order_and_exit_0(srv):
    r = con("-c", "sync", "-c", "who", srv.unix_dial)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("synced"), r.stdout
    assert any(ln.endswith("!" + getuser()) for ln in lines[1:]), r.stdout
    assert "creepy> " not in r.stdout and r.stderr == ""


@pytest.mark.parametrize("bad, shape", [
    ("bogus", "'bogus'?"),
    ("uname a b c", "usage: uname [uid]"),
    ("allow nosuchuser", "allow: user not found"),
])
def test_a_failed_command_stops_the_script_and_exits_1(srv, bad, shape):
    r = con("-c", "sync", "-c", bad, "-c", "who", srv.unix_dial)
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = r.stdout.splitlines()
    assert out[0].startswith("synced") and out[1] == shape, r.stdout
    assert len(out) == 2, f"the command after the failure ran: {r.stdout!r}"


def test_commands_on_standard_input_skip_blanks_and_comments(srv):
    r = con(srv.tcp_dial, stdin="sync   # commit now\n\n# only a comment\nstats\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("synced")
    assert "\nblocks:\t" in r.stdout and "\nera:\t" in r.stdout


def test_standard_input_stops_at_the_first_failure(srv):
    r = con(srv.tcp_dial, stdin="sync\nnope\nsync\n")
    assert r.returncode == 1
    assert r.stdout.count("synced") == 1 and "'nope'?" in r.stdout


def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path):
    r = con("-c", "sync", f"unix!{tmp_path}/nobody-here")
    assert r.returncode == 1
    assert r.stderr.startswith("creepy con: cannot attach main on unix!"), r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_a_bad_address_is_one_line(tmp_path):
    r = con("-c", "sync", "tcp!host!port!extra")
    assert r.returncode == 1 and "bad address" in r.stderr and "Traceback" not in r.stderr


def test_without_an_address_it_dials_the_posted_9pix_or_the_s_service(tmp_path, monkeypatch):
    ns = tmp_path / "ns"
    ns.mkdir(mode=0o700)
    monkeypatch.setenv("NAMESPACE", str(ns))       # where 9pix posts, and con looks
    env = creepy_env()
    s = Server9pix(tmp_path, extra=["-S", "9pix"])
    s.start()
    try:
        r = con("-c", "sync", env=env)
        assert r.returncode == 0 and r.stdout.startswith("synced"), (r.stdout, r.stderr)
        os.rename(ns / "9pix", ns / "other")
        r = con("-c", "sync", env=env)
        assert r.returncode == 1 and str(ns / "9pix") in r.stderr
        r = con("-s", "other", "-c", "sync", env=env)
        assert r.returncode == 0 and r.stdout.startswith("synced"), r.stderr
    finally:
        s.close()


def test_halt_ends_the_server_and_con_exits_0(tmp_path):
    s = Server9pix(tmp_path)
    s.start()
    try:
        c = SyncClient(s.tcp_dial, timeout=DEADLINE)
        c.write_file("kept", b"written before halt\n")
        c.close()
        r = con("-c", "halt", s.unix_dial)
        assert r.returncode == 0, (r.stdout, r.stderr)
        # the console says "halting" unless the server hangs up first: halt's answer may be
        # the connection closing, even before the Rwrite of the command
        assert r.stdout == "" or r.stdout.startswith("halting"), r.stdout
        assert s.proc.wait(DEADLINE) == 0, s.stderr
        s.start()
        c = SyncClient(s.tcp_dial, timeout=DEADLINE)
        assert c.read_file("kept") == b"written before halt\n"
        c.close()
    finally:
        s.close()


# --- interactive ---------------------------------------------------------------------------


class Terminal:
    """`creepy con` on a pseudo-terminal: what a person at a terminal sees."""

    def __init__(self, *args):
        self.master, slave = pty.openpty()
        env = creepy_env()
        env["TERM"] = "dumb"
        env["XDG_STATE_HOME"] = args[0]
        self.p = subprocess.Popen([sys.executable, "-m", "creepy", "con", *args[1:]],
                                  stdin=slave, stdout=slave, stderr=slave, env=env,
                                  close_fds=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text):
        """Read until text has appeared (after what earlier expects consumed)."""
        end = time.monotonic() + DEADLINE
        while text not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"never saw {text!r}; the terminal shows {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                assert data, f"terminal closed; never saw {text!r} in {self.seen!r}"
                self.seen += data.decode("utf-8", "replace").replace("\r", "")
        at = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:at], self.seen[at:]
        return before

    def type(self, text):
        os.write(self.master, text.encode())

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(DEADLINE)
        os.close(self.master)


def test_interactive_prompt_answers_and_other_users_output(srv, tmp_path):
    t = Terminal(str(tmp_path), srv.unix_dial)
    try:
        t.expect("creepy> ")
        t.type("sync\n")
        assert "synced" in t.expect("creepy> ")
        t.type("bogus\n")
        assert "'bogus'?" in t.expect("creepy> ")      # interactively a failure goes on
        # another console user's command shows up while we sit at the prompt
        other = SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE)
        try:
            other.cons("uname")
        finally:
            other.close()
        assert "uid " in t.expect("uname\n") + t.expect("creepy> ")
        t.type("\x04")                                 # end of input
        assert t.p.wait(DEADLINE) == 0
        assert "sync" in (tmp_path / "creepy" / "con_history").read_text()
    finally:
        t.close()


# --- the archive ---------------------------------------------------------------------------


def test_arch_configured_and_run_through_con_archives_into_rip(tmp_path):
    p = Pair(tmp_path)
    try:
        p.c.mkdir("root/notes")
        p.c.write_file("root/notes/today", b"version one\n")
        env = p.env
        r = con("-c", "sync", "-c", "arch main 3", "-c", "arch now 20261128", env=env)
        assert r.returncode == 0, (r.stdout, r.stderr)
        out = r.stdout.splitlines()
        assert out[0].startswith("synced") and out[1].startswith("arch:\ttree main daily at 03")
        assert out[2] == "archiving main for 20261128 into rip", r.stdout
        p.wait_idle()
        got = SyncClient(f"unix!{p.ns / 'rip'}", timeout=DEADLINE)
        try:
            assert got.read_file("main/2026/1128/notes/today") == b"version one\n"
        finally:
            got.close()
        r = con("-c", "arch now 2026-11-28", env=env)
        assert r.returncode == 1 and r.stdout.startswith("arch: bad day"), r.stdout
        r = con("-c", "arch none", env=env)
        assert r.returncode == 0 and r.stdout == "arch:\tnone\n"
    finally:
        p.close()
