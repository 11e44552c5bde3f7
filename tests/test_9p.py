"""`creepy 9p`: plan9port's verbs, and put/get of whole trees, as subprocesses on a real 9pix.

Every verb has a test here: ls [-dlnt], read, readfd, write [-l], writefd, stat, rdwr, create,
rm, put [-r], get [-r]; and the three ways to name the server (-a, -s, and plan9port's
service/path).  What the command printed and its exit status are checked against what our
own 9P client sees on the server.
"""

import fcntl
import os
import pty
import random
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from creepy import errors as E

from creepy.ninep.client import SyncClient, nochange
from creepy.ninep.codec import DMDIR
from creepy.ninep.dial import getuser
from servers import DEADLINE, Server9pix, creepy_env

ME = getuser()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server9pix(tmp_path_factory.mktemp("9p"))
    s.start()
    yield s
    s.close()


@pytest.fixture
def c(srv):
    cl = SyncClient(srv.tcp_dial, timeout=DEADLINE)
    yield cl
    cl.close()


@pytest.fixture
def top(c, request):
    """A fresh directory for one test, named after it."""
    name = re.sub(r"\W", "_", request.node.name)[:60]
    c.mkdir(name)
    return name


def p9(srv, *args, stdin=None, env=None, binary=False):
    r = subprocess.run([sys.executable, "-m", "creepy", "9p", "-a", srv.unix_dial, *args],
                       input=stdin, capture_output=True, text=not binary,
                       env=env or creepy_env(), timeout=DEADLINE)
    return r


def ok(r):
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert not r.stderr, r.stderr
    return r.stdout


# --- reading and writing --------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["read", "readfd"])
def test_read_copies_the_file_to_standard_output(srv, c, top, verb):
    data = random.Random(1).randbytes(3 << 20) + b"tail"    # several Treads, in order
    c.write_file(f"{top}/f", data)
    r = p9(srv, verb, f"{top}/f", binary=True)
    assert r.returncode == 0 and r.stdout == data
    r = p9(srv, verb, f"{top}/missing")
    assert r.returncode == 1 and "file does not exist" in r.stderr


@pytest.mark.parametrize("verb", ["write", "writefd"])
def test_write_truncates_and_writes_standard_input(srv, c, top, verb):
    c.write_file(f"{top}/f", b"a much longer old content\n")
    ok(p9(srv, verb, f"{top}/f", stdin="new\n"))
    assert c.read_file(f"{top}/f") == b"new\n"
    r = p9(srv, verb, f"{top}/nonexistent", stdin="x")     # plan9port opens, never creates
    assert r.returncode == 1 and "file does not exist" in r.stderr


def test_write_l_sends_one_twrite_per_line(srv, c, top):
    c.write_file(f"{top}/f", b"")

    def twrites():
        stats = SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE)
        try:
            text = stats.read_file("stats").decode()
        finally:
            stats.close()
        return int(re.search(r"^Twrite\s+(\d+) calls", text, re.M).group(1))
    before = twrites()
    ok(p9(srv, "write", "-l", f"{top}/f", stdin="one\ntwo\nthree\n"))
    assert c.read_file(f"{top}/f") == b"one\ntwo\nthree\n"
    assert twrites() - before == 3


def test_write_of_empty_input_leaves_an_empty_file(srv, c, top):
    c.write_file(f"{top}/f", b"old")
    ok(p9(srv, "write", f"{top}/f", stdin=""))
    assert c.read_file(f"{top}/f") == b""


def test_rdwr_alternates_reads_of_the_file_and_lines_of_input(srv):
    r = subprocess.run([sys.executable, "-m", "creepy", "9p", "-a", srv.unix_dial, "-A", "main",
                        "rdwr", "cons"], input="sync\nuname\n", capture_output=True, text=True,
                       env=creepy_env(), timeout=DEADLINE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("creepy> \n")               # the first read: the prompt
    assert "sync\n" in r.stdout and "uname\n" in r.stdout


# --- stat and ls -----------------------------------------------------------------------------


def test_stat_prints_plan9_dir_format(srv, c, top):
    c.write_file(f"{top}/f", b"12345")
    st = c.stat_path(f"{top}/f")
    out = ok(p9(srv, "stat", f"{top}/f"))
    assert out == (f"'f' '{st.uid}' '{st.gid}' '{st.muid}' q ({st.qid.path:016x} {st.qid.vers} ) "
                   f"m 0{st.mode:o} at {st.atime} mt {st.mtime} l 5 t 0 d 0\n")
    d = ok(p9(srv, "stat", top))
    assert re.fullmatch(rf"'{top}' '\S+' '\S+' '\S+' q \([0-9a-f]{{16}} \d+ d\) m 020000000\d\d\d "
                        r"at \d+ mt \d+ l 0 t 0 d 0\n", d), d


def test_ls_lists_names_sorted_and_quoted(srv, c, top):
    for name in ("b", "a", "with space", "it's"):
        c.write_file(f"{top}/{name}", b"")
    c.mkdir(f"{top}/dir")
    assert ok(p9(srv, "ls", top)).splitlines() == ["a", "b", "dir", "'it''s'", "'with space'"]


def test_ls_l_lines(srv, c, top):
    c.write_file(f"{top}/small", b"x")
    c.write_file(f"{top}/large", b"y" * 12345)
    c.mkdir(f"{top}/d")
    st = nochange()
    st.mtime = 1_000_000_000            # Sep 9 2001: more than six months ago, so the year
    fid = c.walkpath(f"{top}/small")
    c.wstat(fid, st)
    c.clunk(fid)
    lines = ok(p9(srv, "ls", "-l", top)).splitlines()
    assert [ln.split()[-1] for ln in lines] == ["d", "large", "small"]
    d, large, small = lines
    assert re.fullmatch(rf"d-rwxr-xr-x M 0 {ME} +\S+ +0 \w{{3}} [ \d]\d \d\d:\d\d d", d), d
    assert re.fullmatch(rf"--rw-r--r-- M 0 {ME} +\S+ +12345 \w{{3}} [ \d]\d \d\d:\d\d large",
                        large), large
    assert small.endswith(" 1 Sep  9  2001 small"), small
    # columns line up: the length column ends at the same place on every line
    ends = {re.search(r" (\d+) \w{3} ", ln).end(1) for ln in lines}
    assert len(ends) == 1, lines


def test_ls_d_t_n_and_several_paths(srv, c, top):
    c.mkdir(f"{top}/sub")
    for i, name in enumerate(("old", "new", "mid")):
        c.write_file(f"{top}/sub/{name}", b"")
        st = nochange()
        st.mtime = 1_700_000_000 + {"old": 0, "mid": 50, "new": 100}[name]
        fid = c.walkpath(f"{top}/sub/{name}")
        c.wstat(fid, st)
        c.clunk(fid)
    assert ok(p9(srv, "ls", "-d", f"{top}/sub")) == "sub\n"
    assert ok(p9(srv, "ls", "-t", f"{top}/sub")).split() == ["new", "mid", "old"]
    server_order = [st.name for st in c.listdir(f"{top}/sub")]
    assert ok(p9(srv, "ls", "-n", f"{top}/sub")).split() == server_order
    r = p9(srv, "ls", f"{top}/sub/old", f"{top}/nothere", f"{top}/sub/new")
    assert r.returncode == 1
    assert r.stdout.split() == ["old", "new"]
    assert r.stderr.strip() == f"creepy 9p: dirstat {top}/nothere: file does not exist"


# --- create and rm ---------------------------------------------------------------------------


def test_create_makes_empty_files_and_reports_each_failure(srv, c, top):
    c.write_file(f"{top}/exists", b"keep")
    r = p9(srv, "create", f"{top}/one", f"{top}/exists", f"{top}/two")
    assert r.returncode == 1
    assert r.stderr.strip() == f"creepy 9p: create {top}/exists: file already exists"
    names = sorted(st.name for st in c.listdir(top))
    assert names == ["exists", "one", "two"]
    assert c.stat_path(f"{top}/one").mode & 0o777 == 0o644     # 0666 masked by the parent 0755
    assert c.read_file(f"{top}/exists") == b"keep"


def test_rm_removes_files_and_empty_directories(srv, c, top):
    c.write_file(f"{top}/f", b"")
    c.mkdir(f"{top}/empty")
    c.mkdir(f"{top}/full")
    c.write_file(f"{top}/full/x", b"")
    r = p9(srv, "rm", f"{top}/f", f"{top}/full", f"{top}/empty", f"{top}/gone")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"creepy 9p: remove {top}/full: {E.ENOTEMPTY}",
                                     f"creepy 9p: remove {top}/gone: {E.ENOENT}"]
    assert sorted(st.name for st in c.listdir(top)) == ["full"]


# --- put and get -----------------------------------------------------------------------------


def make_local_tree(root, rng):
    """A tree of files with assorted sizes, modes and times, a deep path and an empty dir."""
    files = {}
    os.makedirs(root / "deep" / "a" / "b" / "c" / "d")
    os.makedirs(root / "empty")
    for i in range(40):
        d = ["", "deep", "deep/a/b/c/d", "sub"][i % 4]
        os.makedirs(root / d, exist_ok=True)
        path = root / d / f"f{i:02d}"
        data = rng.randbytes(rng.choice([0, 1, 100, 8191, 70000]))
        path.write_bytes(data)
        os.chmod(path, rng.choice([0o644, 0o600, 0o755, 0o444]))
        t = 1_600_000_000 + i * 3600
        os.utime(path, (t, t))
        files[path.relative_to(root).as_posix()] = data
    (root / "big").write_bytes(rng.randbytes(5 << 20))
    os.chmod(root / "sub", 0o750)
    os.utime(root / "deep", (1_500_000_000, 1_500_000_000))
    return files


def local_snapshot(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            data = None if os.path.isdir(p) else open(p, "rb").read()
            out[rel] = (st.st_mode & 0o777, int(st.st_mtime), data)
    return out


def test_put_r_and_get_r_round_trip_a_tree_with_modes_and_times(srv, c, top, tmp_path):
    src = tmp_path / "src"
    make_local_tree(src, random.Random(2))
    ok(p9(srv, "put", "-r", str(src), f"{top}/tree"))
    st = c.stat_path(f"{top}/tree/sub")
    assert st.mode & DMDIR and st.mode & 0o777 == 0o750
    assert c.stat_path(f"{top}/tree/deep").mtime == 1_500_000_000
    assert c.stat_path(f"{top}/tree/sub/f03").mtime == 1_600_000_000 + 3 * 3600
    assert c.read_file(f"{top}/tree/big") == (src / "big").read_bytes()
    back = tmp_path / "back"
    ok(p9(srv, "get", "-r", f"{top}/tree", str(back)))
    assert local_snapshot(back) == local_snapshot(src)


def test_put_and_get_of_a_file_into_an_existing_directory_keep_its_name(srv, c, top, tmp_path):
    f = tmp_path / "report.txt"
    f.write_bytes(b"quarterly\n")
    c.mkdir(f"{top}/inbox")
    ok(p9(srv, "put", str(f), f"{top}/inbox"))
    assert c.read_file(f"{top}/inbox/report.txt") == b"quarterly\n"
    ok(p9(srv, "put", str(f), f"{top}/renamed"))
    assert c.read_file(f"{top}/renamed") == b"quarterly\n"
    out = tmp_path / "out"
    out.mkdir()
    ok(p9(srv, "get", f"{top}/inbox/report.txt", str(out)))
    assert (out / "report.txt").read_bytes() == b"quarterly\n"


def test_put_and_get_refuse_a_directory_without_r(srv, c, top, tmp_path):
    (tmp_path / "d").mkdir()
    r = p9(srv, "put", str(tmp_path / "d"), f"{top}/d")
    assert r.returncode == 1 and "is a directory (use put -r)" in r.stderr
    c.mkdir(f"{top}/rd")
    r = p9(srv, "get", f"{top}/rd", str(tmp_path / "x"))
    assert r.returncode == 1 and "is a directory (use get -r)" in r.stderr


def test_put_skips_what_9p2000_cannot_hold_and_says_so(srv, c, top, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "real").write_bytes(b"data")
    os.symlink("real", src / "link")
    os.mkfifo(src / "fifo")
    r = p9(srv, "put", "-r", str(src), f"{top}/s")
    assert r.returncode == 1
    assert sorted(r.stderr.splitlines()) == [
        f"creepy 9p: skipping {src}/fifo: 9P2000 holds only files and directories",
        f"creepy 9p: skipping {src}/link: 9P2000 holds only files and directories"]
    assert [st.name for st in c.listdir(f"{top}/s")] == ["real"]


def test_put_shows_a_progress_bar_on_a_terminal_only(srv, c, top, tmp_path):
    f = tmp_path / "big"
    f.write_bytes(os.urandom(6 << 20))
    r = p9(srv, "put", str(f), f"{top}/quiet")          # stderr is a pipe: no bar
    assert r.returncode == 0 and r.stderr == ""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "creepy", "9p", "-a", srv.unix_dial, "put",
                          str(f), f"{top}/loud"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave, env=creepy_env())
    os.close(slave)
    seen = b""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            seen += data
        elif p.poll() is not None:
            break
    os.close(master)
    assert p.wait(DEADLINE) == 0
    text = seen.decode("utf-8", "replace")
    assert "put: 100%" in text and "6.00M" in text, text
    assert c.stat_path(f"{top}/loud").length == 6 << 20


# --- naming the server -----------------------------------------------------------------------


def test_s_and_service_paths_name_a_posted_server_like_plan9port(srv, c, top):
    c.write_file(f"{top}/f", b"by name\n")
    env = creepy_env()
    env["NAMESPACE"] = srv.dir                          # srv.unix is <dir>/sock
    r = subprocess.run([sys.executable, "-m", "creepy", "9p", "-s", "sock", "read", f"{top}/f"],
                       capture_output=True, env=env, timeout=DEADLINE)
    assert r.returncode == 0 and r.stdout == b"by name\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "creepy", "9p", "read", f"sock/{top}/f"],
                       capture_output=True, env=env, timeout=DEADLINE)
    assert r.returncode == 0 and r.stdout == b"by name\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "creepy", "9p", "-a", srv.tcp_dial, "read",
                        f"/{top}/f"], capture_output=True, env=env, timeout=DEADLINE)
    assert r.returncode == 0 and r.stdout == b"by name\n", r.stderr


def test_usage_and_connection_errors_are_one_line(srv, tmp_path):
    r = subprocess.run([sys.executable, "-m", "creepy", "9p", "-a", f"unix!{tmp_path}/none",
                        "ls"], capture_output=True, text=True, env=creepy_env(),
                       timeout=DEADLINE)
    assert r.returncode == 1 and r.stderr.startswith("creepy 9p: cannot attach")
    assert len(r.stderr.splitlines()) == 1
    r = p9(srv, "frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = p9(srv, "read")
    assert r.returncode == 2 and "usage: creepy 9p read" in r.stderr
