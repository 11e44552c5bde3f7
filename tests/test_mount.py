"""`creepy mount`: a real 9pix mounted through FUSE, used by everyday programs.

The mount runs as `creepy mount -f` in a child process (the test reads its "mounted" line,
never sleeps for it); the programs are the real ones: tar, diff, python -m compileall, git.
What is checked:

- the POSIX battery of tests/posix_battery.py, on one mount for the module;
- tar extract and `diff -r`, compileall (and importing what it compiled), git clone and
  `git fsck --full --strict`, and tests/fsx.py's random reads, writes, truncates, fsyncs and
  reopens (FSX_OPS, 10,000 unless set; FSX_SEED, printed on failure), a third of the reads and
  writes through a shared mmap, compared with a model after every read;
- what the server sees: an unlinked open file hidden on the server until its last close;
- a server killed and started again: requests fail at once with ENOTCONN, the mount redials
  and goes on, an open file included; a stopped server: requests end with ETIMEDOUT;
- unmounting: SIGTERM, fusermount -u, and the background mount of a plain `creepy mount`;
- -o ro, bad options and unreachable servers;
- `creepy check` of the disk after all that.

FUSE needs /dev/fuse, pyfuse3 and fusermount3.  A host without /dev/fuse skips these tests and
says so; a host with /dev/fuse but without pyfuse3 or fusermount3 fails them (CI installs
both: .ci/run).
"""

import errno
import importlib.util
import mmap
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest

import posix_battery
from fsx import Fsx
from creepy.ninep.client import SyncClient
from servers import DEADLINE, REPO, Server9pix, creepy_env


def require_fuse():
    if not os.path.exists("/dev/fuse"):
        pytest.skip("this host has no /dev/fuse, so creepy mount cannot be tested here")
    missing = []
    if importlib.util.find_spec("pyfuse3") is None:
        missing.append("pyfuse3 (pip install -e '.[test,mount]', after apt-get install "
                       "libfuse3-dev pkg-config)")
    if shutil.which("fusermount3") is None:
        missing.append("fusermount3 (apt-get install fuse3)")
    if missing:
        pytest.fail("/dev/fuse is here but the FUSE tests lack " + " and ".join(missing))


class Mount:
    """`creepy mount -f [opts] addr mnt` as a child; start() returns once it has mounted."""

    def __init__(self, addr, mnt, *opts):
        self.addr, self.mnt, self.opts = addr, str(mnt), list(opts)
        os.makedirs(self.mnt, exist_ok=True)
        self.lines = []
        self.cond = threading.Condition()
        self.p = None

    def start(self):
        mark = len(self.lines)
        self.p = subprocess.Popen([sys.executable, "-m", "creepy", "mount", "-f", *self.opts,
                                   self.addr, self.mnt], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=creepy_env())
        threading.Thread(target=self._collect, args=(self.p,), daemon=True).start()
        end = time.monotonic() + DEADLINE
        with self.cond:
            while not any(" mounted on " in ln for ln in self.lines[mark:]):
                if self.p.poll() is not None or time.monotonic() > end:
                    self._kill()
                    raise AssertionError(f"creepy mount did not mount:\n{self.log}")
                self.cond.wait(0.5)
        assert os.path.ismount(self.mnt)
        return self

    def _collect(self, p):
        for raw in p.stderr:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace"))
                self.cond.notify_all()

    @property
    def log(self):
        with self.cond:
            return "".join(self.lines)

    def wait_log(self, text):
        end = time.monotonic() + DEADLINE
        with self.cond:
            while text not in "".join(self.lines):
                assert time.monotonic() < end, f"the mount never said {text!r}:\n{self.log}"
                self.cond.wait(0.5)

    def stop(self):
        """SIGTERM: the mount must unmount and exit 0."""
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self._kill()
            raise AssertionError(f"creepy mount ignored SIGTERM:\n{self.log}")
        assert rc == 0, f"creepy mount exited {rc}:\n{self.log}"
        assert not os.path.ismount(self.mnt), "still mounted after SIGTERM"

    def _kill(self):
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(DEADLINE)
        subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)

    def close(self):
        if self.p is not None and self.p.poll() is None:
            try:
                self.stop()
            except AssertionError:
                self._kill()
        elif os.path.ismount(self.mnt):
            self._kill()


def run(*argv, cwd=None, env=None, timeout=DEADLINE * 3):
    r = subprocess.run(list(map(str, argv)), cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{argv}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    """(server, mount) shared by the module."""
    require_fuse()
    base = tmp_path_factory.mktemp("mount")
    (base / "srv").mkdir()
    srv = Server9pix(base / "srv", size="512M")
    srv.start()
    m = Mount(srv.unix_dial, base / "mnt")
    try:
        m.start()
        yield srv, m
        m.stop()
        srv.stop()
    finally:
        m.close()
        srv.close()


@pytest.fixture
def work(mounted, request):
    """A fresh directory on the mount for one test."""
    name = re.sub(r"\W", "_", request.node.name)[:80]
    d = os.path.join(mounted[1].mnt, name)
    os.mkdir(d)
    return d


@pytest.mark.parametrize("check", posix_battery.CHECKS, ids=lambda f: f.__name__[len("check_"):])
def test_posix(work, check):
    check(work)


# --- the server's view -----------------------------------------------------------------------


def test_what_the_mount_writes_other_clients_see_at_once_and_the_reverse(mounted, work):
    srv, m = mounted
    top = os.path.basename(work)
    c = SyncClient(srv.tcp_dial, timeout=DEADLINE)
    try:
        with open(os.path.join(work, "f"), "wb") as f:
            f.write(b"from the mount")
            f.flush()
            assert c.read_file(f"{top}/f") == b"from the mount"   # before close, even
        c.write_file(f"{top}/g", b"from another client, longer")
        time.sleep(1.2)         # past the kernel's attribute cache (-o cache=1)
        assert open(os.path.join(work, "g"), "rb").read() == b"from another client, longer"
        c.write_file(f"{top}/f", b"changed")
        time.sleep(1.2)
        assert open(os.path.join(work, "f"), "rb").read() == b"changed"
    finally:
        c.close()


def test_an_unlinked_open_file_is_hidden_on_the_server_until_closed(mounted, work):
    srv, m = mounted
    top = os.path.basename(work)
    c = SyncClient(srv.tcp_dial, timeout=DEADLINE)
    try:
        fd = os.open(os.path.join(work, "t"), os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.unlink(os.path.join(work, "t"))
        names = [st.name for st in c.listdir(top)]
        assert len(names) == 1 and names[0].startswith(".creepy-unlinked-"), names
        os.write(fd, b"y")
        assert c.read_file(f"{top}/{names[0]}") == b"xy"
        os.close(fd)
        end = time.monotonic() + DEADLINE       # release reaches the mount after close returns
        while c.listdir(top):
            assert time.monotonic() < end, c.listdir(top)
            time.sleep(0.05)
    finally:
        c.close()


def test_unlink_remove_mode_relies_on_the_server_keeping_removed_files(mounted, tmp_path):
    """-o unlink=remove removes at once: right on a server that keeps a removed file usable
    through the fids that had it open (POSIX's rule), as creepy 9pix does."""
    srv, _ = mounted
    m = Mount(srv.unix_dial, tmp_path / "mnt", "-o", "unlink=remove")
    m.start()
    try:
        d = os.path.join(m.mnt, "remove-mode")
        os.mkdir(d)
        posix_battery.check_an_unlinked_open_file_stays_usable_until_closed(d)
    finally:
        m.close()


# --- everyday programs -----------------------------------------------------------------------


def make_source_tree(root, rng):
    """The project's own code and docs, plus binaries, a deep path, odd names, empty things."""
    shutil.copytree(os.path.join(REPO, "creepy"), root / "creepy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(REPO, "docs"), root / "docs")
    bins = root / "bin"
    bins.mkdir()
    for i, size in enumerate([0, 1, 4095, 4096, 65537, 1 << 20, (3 << 20) + 17]):
        (bins / f"blob{i}").write_bytes(rng.randbytes(size))
    deep = root.joinpath(*[f"level{i}" for i in range(40)])
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("forty levels down\n")
    (root / "empty dir").mkdir()
    (root / "name with spaces & 'quotes'").write_text("odd\n")
    (root / "ünïcödé.txt").write_text("utf-8 names\n")
    os.chmod(bins / "blob2", 0o755)
    os.utime(bins / "blob3", (1_111_111_111, 1_111_111_111))


def test_tar_extract_then_diff_r(work, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_source_tree(src, random.Random(7))
    tarball = tmp_path / "t.tar"
    with tarfile.open(tarball, "w") as t:
        t.add(src, arcname="src")
    run("tar", "-xf", tarball, "-C", work)
    run("diff", "-r", src, os.path.join(work, "src"))
    for d, dirs, files in os.walk(src):
        for name in files:
            a = os.path.join(d, name)
            b = os.path.join(work, "src", os.path.relpath(a, src))
            sa, sb = os.stat(a), os.stat(b)
            assert (int(sa.st_mtime), sa.st_mode & 0o777) == (int(sb.st_mtime), sb.st_mode & 0o777), b


def test_python_compileall_and_import_from_the_mount(work):
    dst = os.path.join(work, "pkg")
    shutil.copytree(os.path.join(REPO, "creepy"), os.path.join(dst, "creepy"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "compileall", "-q", dst)
    pyc = os.path.join(dst, "creepy", "__pycache__")
    compiled = sorted(f.split(".")[0] for f in os.listdir(pyc))
    sources = sorted(f[:-3] for f in os.listdir(os.path.join(dst, "creepy")) if f.endswith(".py"))
    assert compiled == sources
    out = run(sys.executable, "-c", "import creepy.p9, creepy.ninep.codec as c; "
              "print(creepy.p9.__file__, creepy.p9.__cached__, c.DMDIR)", cwd=dst,
              env={"PATH": os.environ["PATH"]})
    path, cached, dmdir = out.split()
    assert path.startswith(dst) and os.path.exists(cached) and dmdir == str(0x80000000)


def git_env(home):
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Glenda", "GIT_AUTHOR_EMAIL": "glenda@example.org",
           "GIT_COMMITTER_NAME": "Glenda", "GIT_COMMITTER_EMAIL": "glenda@example.org",
           "LC_ALL": "C"}
    return env


def test_git_clone_fsck_commit_and_gc(work, tmp_path):
    env = git_env(tmp_path)
    src = tmp_path / "origin"
    src.mkdir()
    make_source_tree(src, random.Random(8))
    run("git", "init", "-q", "-b", "main", src, env=env)
    run("git", "-C", src, "add", "-A", env=env)
    run("git", "-C", src, "commit", "-q", "-m", "first", env=env)
    (src / "creepy" / "p9.py").write_text("# rewritten\n")
    run("git", "-C", src, "commit", "-q", "-am", "second", env=env)
    run("git", "-C", src, "tag", "v1", env=env)
    clone = os.path.join(work, "clone")
    run("git", "clone", "-q", f"file://{src}", clone, env=env)
    run("git", "-C", clone, "fsck", "--full", "--strict", env=env)
    assert run("git", "-C", clone, "status", "--porcelain", env=env) == ""
    assert run("git", "-C", clone, "rev-parse", "HEAD", env=env) == \
        run("git", "-C", src, "rev-parse", "HEAD", env=env)
    with open(os.path.join(clone, "NEW"), "w") as f:
        f.write("made in the mount\n")
    run("git", "-C", clone, "add", "NEW", env=env)
    run("git", "-C", clone, "commit", "-q", "-m", "third", env=env)
    run("git", "-C", clone, "checkout", "-q", "v1", env=env)
    assert not os.path.exists(os.path.join(clone, "NEW"))
    run("git", "-C", clone, "checkout", "-q", "main", env=env)
    run("git", "-C", clone, "gc", "-q", env=env)
    run("git", "-C", clone, "fsck", "--full", "--strict", env=env)
    assert run("git", "-C", clone, "log", "--format=%s", env=env).split() == \
        ["third", "second", "first"]


# --- fsx ---------------------------------------------------------------------------------------


class MountedFile:
    """tests/fsx.py's target: one file through the mount, read and written with pread and
    pwrite or, a third of the time, through a shared mmap (msync'd), as fsx does."""

    def __init__(self, path, seed):
        self.path = path
        self.rng = random.Random(seed ^ 0x6d6d6170)     # its own choices: fsx's stay the same
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def length(self):
        return os.fstat(self.fd).st_size

    def read(self, off, count):
        size = self.length()
        if off + count <= size and self.rng.random() < 0.33:
            with mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
                return m[off:off + count]
        return os.pread(self.fd, count, off)

    def write(self, off, data):
        if self.rng.random() < 0.33:
            if off + len(data) > self.length():
                os.ftruncate(self.fd, off + len(data))
            with mmap.mmap(self.fd, self.length(), mmap.MAP_SHARED,
                           mmap.PROT_READ | mmap.PROT_WRITE) as m:
                m[off:off + len(data)] = data
                m.flush()
        else:
            assert os.pwrite(self.fd, data, off) == len(data)

    def truncate(self, length):
        os.ftruncate(self.fd, length)

    def sync(self):
        os.fsync(self.fd)

    def reopen(self):
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)

    def close(self):
        os.close(self.fd)


def test_fsx_random_operations_match_a_model(mounted, work):
    ops = int(os.environ.get("FSX_OPS", "0")) or 10_000
    seed = int(os.environ.get("FSX_SEED", random.randrange(1 << 30)))
    print(f"fsx through the mount: {ops} operations, seed {seed} (FSX_SEED, FSX_OPS)")
    f = MountedFile(os.path.join(work, "fsx.data"), seed)
    fsx = Fsx(seed, f, 16384, max_len=300_000, sync_every=500, reopen_every=1000)
    try:
        fsx.run(ops)
    finally:
        f.close()
    srv, _ = mounted
    c = SyncClient(srv.tcp_dial, timeout=DEADLINE)
    try:        # what the server holds is what the model says
        assert c.read_file(f"{os.path.basename(work)}/fsx.data") == bytes(fsx.model.data)
    finally:
        c.close()


# --- the server goes away ----------------------------------------------------------------------


def failing(argv, timeout=DEADLINE):
    """Run argv, which must fail (not hang); return its stderr."""
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert r.returncode != 0, f"{argv} succeeded: {r.stdout}"
    return r.stderr, time.monotonic() - t0


def test_a_server_restart_fails_requests_clearly_then_the_mount_goes_on(tmp_path):
    require_fuse()
    srv = Server9pix(tmp_path, size="128M")
    srv.start()
    m = Mount(srv.unix_dial, tmp_path / "mnt")
    try:
        m.start()
        f = os.path.join(m.mnt, "kept")
        with open(f, "wb") as out:
            out.write(b"0123456789" * 1000)
            out.flush()
            os.fsync(out.fileno())           # committed: survives SIGKILL
        reader = open(f, "rb")
        assert reader.read(10) == b"0123456789"
        srv.kill()
        err, secs = failing(["ls", m.mnt])
        assert "Transport endpoint is not connected" in err, err
        assert secs < 10, f"ls took {secs:.1f} s to fail"
        m.wait_log("lost the connection")
        err, _ = failing(["cat", os.path.join(m.mnt, "kept")])
        srv.start()
        end = time.monotonic() + DEADLINE
        while subprocess.run(["ls", m.mnt], capture_output=True).returncode != 0:
            assert time.monotonic() < end, f"the mount never came back:\n{m.log}"
            time.sleep(0.2)
        m.wait_log("connected again")
        assert reader.read(20) == b"01234567890123456789"     # the open file goes on
        reader.close()
        with open(os.path.join(m.mnt, "after"), "wb") as out:
            out.write(b"written after the restart")
        c = SyncClient(srv.tcp_dial, timeout=DEADLINE)
        try:
            assert c.read_file("after") == b"written after the restart"
        finally:
            c.close()
    finally:
        m.close()
        srv.close()


def test_a_stopped_server_ends_requests_with_etimedout(tmp_path):
    require_fuse()
    srv = Server9pix(tmp_path, size="64M")
    srv.start()
    m = Mount(srv.unix_dial, tmp_path / "mnt", "-o", "timeout=2,cache=0")
    try:
        m.start()
        os.mkdir(os.path.join(m.mnt, "d"))
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            err, secs = failing(["ls", os.path.join(m.mnt, "d")])
            assert "Connection timed out" in err, err
            assert secs < 20
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        assert os.listdir(os.path.join(m.mnt, "d")) == []
        m.wait_log("no answer from the server within 2 s")
    finally:
        m.close()
        srv.close()


# --- mounting and unmounting -------------------------------------------------------------------


def test_fusermount_u_unmounts_and_the_mount_exits_0(mounted, tmp_path):
    srv, _ = mounted
    m = Mount(srv.unix_dial, tmp_path / "mnt")
    m.start()
    try:
        run("fusermount3", "-u", m.mnt)
        assert m.p.wait(DEADLINE) == 0, m.log
        assert not os.path.ismount(m.mnt)
    finally:
        m.close()


def test_without_f_the_mount_returns_when_ready_and_lives_on(mounted, tmp_path):
    srv, _ = mounted
    mnt = tmp_path / "bg"
    mnt.mkdir()
    r = subprocess.run([sys.executable, "-m", "creepy", "mount", srv.unix_dial, str(mnt)],
                       capture_output=True, text=True, env=creepy_env(), timeout=DEADLINE)
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt)
        assert "README" not in os.listdir(mnt)
        (mnt / "bg-file").write_text("through the background mount\n")
        assert (mnt / "bg-file").read_text() == "through the background mount\n"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    end = time.monotonic() + DEADLINE
    while daemons(str(mnt)):
        assert time.monotonic() < end, "the background mount did not exit after unmount"
        time.sleep(0.1)


def daemons(mnt):
    """Pids of processes whose command line ends with mnt (the background mount)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"mount" in argv and mnt.encode() in argv:
                out.append(int(pid))
    return out


def test_ro_mount_refuses_writes_and_reads(mounted, tmp_path):
    srv, _ = mounted
    c = SyncClient(srv.tcp_dial, timeout=DEADLINE)
    c.write_file("ro-test", b"readable")
    c.close()
    m = Mount(srv.unix_dial, tmp_path / "mnt", "-o", "ro")
    m.start()
    try:
        assert open(os.path.join(m.mnt, "ro-test"), "rb").read() == b"readable"
        with pytest.raises(OSError) as e:
            open(os.path.join(m.mnt, "ro-test"), "wb")
        assert e.value.errno == errno.EROFS
        with pytest.raises(OSError) as e:
            os.mkdir(os.path.join(m.mnt, "nope"))
        assert e.value.errno == errno.EROFS
    finally:
        m.close()


@pytest.mark.parametrize("args, status, says", [
    (["-o", "frobnicate", "ADDR", "MNT"], 2, "unknown option 'frobnicate'"),
    (["-o", "timeout=soon", "ADDR", "MNT"], 2, "option timeout: bad value 'soon'"),
    (["-o", "unlink=never", "ADDR", "MNT"], 2, "option unlink: use one of hide, remove"),
    (["tcp!a!b!c", "MNT"], 2, "bad address"),
    (["ADDR", "MNT/missing"], 1, "not a directory"),
    (["unix!/nonexistent/sock", "MNT"], 1, "cannot attach"),
])
def test_bad_invocations_are_one_line(mounted, tmp_path, args, status, says):
    srv, _ = mounted
    argv = [a.replace("ADDR", srv.unix_dial).replace("MNT", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-m", "creepy", "mount", "-f", *argv],
                       capture_output=True, text=True, env=creepy_env(), timeout=DEADLINE)
    assert r.returncode == status, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not os.path.ismount(tmp_path)


def test_zz_the_disk_checks_clean_after_everything(mounted):
    """Last in the module: creepy check on the disk under all the above (it may be served)."""
    srv, m = mounted
    c = SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE)
    try:
        assert "synced" in c.cons("sync", timeout=DEADLINE)
    finally:
        c.close()
    r = subprocess.run([sys.executable, "-m", "creepy", "check", srv.disk], capture_output=True,
                       text=True, env=creepy_env(), timeout=DEADLINE * 3)
    assert r.returncode == 0, r.stdout + r.stderr


def test_yesterdays_archive_browsed_through_a_read_only_mount_of_rip(tmp_path):
    """The whole path a person takes: a tree put into 9pix with `creepy 9p put -r`, archived
    into rip through `creepy con`, then the archive mounted and compared with `diff -r`."""
    require_fuse()
    from test_arch import Pair
    p = Pair(tmp_path)
    m = None
    try:
        src = tmp_path / "tree"
        src.mkdir()
        make_source_tree(src, random.Random(9))
        env = p.env
        run(sys.executable, "-m", "creepy", "9p", "-s", "9pix", "put", "-r", src, "tree", env=env)
        run(sys.executable, "-m", "creepy", "con", "-c", "sync", "-c", "arch main 3",
            "-c", "arch now 20261128", env=env)
        last = p.wait_idle()
        assert last.get("ok"), last
        m = Mount(f"unix!{p.ns / 'rip'}", tmp_path / "rip", "-o", "ro")
        m.start()
        day = os.path.join(m.mnt, "main", "2026", "1128", "tree")
        run("diff", "-r", src, day)
        with pytest.raises(OSError) as e:
            open(os.path.join(day, "new"), "w")
        assert e.value.errno == errno.EROFS
    finally:
        if m is not None:
            m.close()
        p.close()
