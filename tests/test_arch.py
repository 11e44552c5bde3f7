"""arch: 9pix archives its committed tree into rip, the first time whole, then incrementally.

Every test runs the real programs: `creepy fmt`, `creepy 9pix` and `creepy rip` as subprocesses
on disks in tmp_path, with a private plan9port name space directory (NAMESPACE) where both
post their sockets, so 9pix finds rip under its default name "rip".  Archives are compared
with the tree 9pix served when they were taken: names, mode, owner, group, mtime, length and
bytes.

The acceptance run of issue 4 (100 MiB in 5,000 files) runs at full size: about ten seconds
on a 2-core machine, most of it filling 9pix and reading both trees back to compare them.  It
checks what the second archive wrote and how much the WORM grew; how long each archive took
is for bench/arch.py to say (no test asserts a time).
"""

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from creepy.ninep.client import Client, SyncClient, nochange
from creepy.ninepix import next_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 60.0
DMDIR, DMAPPEND, DMTMP, DMSYMLINK = 0x80000000, 0x40000000, 0x04000000, 0x02000000


# --- the programs --------------------------------------------------------------------------


def env_for(ns, extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["NAMESPACE"] = str(ns)
    env.pop("CREEPY_ARCH_PAUSE", None)
    env.update(extra or {})
    return env


def creepy(*args, env):
    return subprocess.run([sys.executable, "-m", "creepy", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=DEADLINE * 3)


class Proc:
    """creepy 9pix or rip as a child; start() returns once it logs 'serving'."""

    def __init__(self, argv, env):
        self.argv = [sys.executable, "-m", "creepy", *map(str, argv)]
        self.env = env
        self.lines = []
        self.cond = threading.Condition()
        self.p = None

    def start(self):
        mark = len(self.lines)
        self.p = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._collect, args=(self.p,), daemon=True).start()
        end = time.monotonic() + DEADLINE
        with self.cond:
            while not any(" serving " in ln for ln in self.lines[mark:]):
                if self.p.poll() is not None or time.monotonic() > end:
                    raise AssertionError(f"{self.argv} did not start:\n{self.log}")
                self.cond.wait(0.5)
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

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill(self):
        self.p.kill()
        self.p.wait(DEADLINE)

    def stop(self):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.kill()


class Pair:
    """A main disk served by 9pix and a WORM served by rip, both posted in ns."""

    def __init__(self, tmp, pause=None, main_size="512M", worm_size="1G"):
        self.dir = tmp
        self.ns = tmp / "ns"
        self.ns.mkdir(mode=0o700)
        self.main_disk = tmp / "main.disk"
        self.worm_disk = tmp / "rip.disk"
        self.pause = pause
        self.env = env_for(self.ns, {"CREEPY_ARCH_PAUSE": str(pause)} if pause else None)
        for args in (("-s", main_size, self.main_disk), ("-w", "-s", worm_size, self.worm_disk)):
            r = creepy("fmt", *args, env=self.env)
            assert r.returncode == 0, r.stderr
        self.ninepix = Proc(["9pix", "-S", "9pix", "-i", "3600", self.main_disk], self.env)
        self.rip = Proc(["rip", "-S", "rip", self.worm_disk], self.env)
        self.ninepix.start()
        self.rip.start()
        self.c = self.client("9pix")
        self.r = self.client("rip")

    def client(self, name):
        return SyncClient(f"unix!{self.ns / name}", aname="main", timeout=DEADLINE * 3)

    def restart_rip(self):
        self.r.close()
        self.rip.start()
        self.r = self.client("rip")

    def restart_9pix(self):
        """SIGKILL 9pix and start it again on its disk: what it serves is what it committed."""
        self.c.close()
        self.ninepix.kill()
        self.ninepix.start()
        self.c = self.client("9pix")

    def close(self):
        for c in (self.c, self.r):
            try:
                c.close()
            except Exception:
                pass
        self.ninepix.stop()
        self.rip.stop()

    # --- arch through the console ------------------------------------------------------------

    def cons(self, line):
        return self.c.cons(line, timeout=DEADLINE).strip()

    def stats(self):
        return self.c.read_file("stats").decode()

    def archive(self, day):
        """`arch now day`, wait for it to end; return the 'arch last' line as a dict and the
        seconds the test saw it take."""
        t0 = time.perf_counter()
        out = self.cons(f"arch now {day}")
        assert out.startswith("archiving"), out
        last = self.wait_idle()
        return last, time.perf_counter() - t0

    def wait_idle(self):
        end = time.monotonic() + DEADLINE * 5
        while True:
            text = self.stats()
            if stats_line(text, "arch run:") == "idle":
                return last_result(text)
            assert time.monotonic() < end, text
            time.sleep(0.05)

    def wait_paused(self):
        end = time.monotonic() + DEADLINE
        while True:
            run = stats_line(self.stats(), "arch run:")
            if run is not None and run.endswith("paused"):
                return int(run.split()[1])          # "pid N ..."
            assert time.monotonic() < end, self.stats()
            time.sleep(0.05)

    def worm_used(self):
        line = stats_line(self.r.read_file("stats").decode(), "blocks:")
        return int(line.split()[0])

    def rip_sync(self):
        out = self.r.cons("sync", timeout=DEADLINE)
        assert "synced" in out, out


def stats_line(text, key):
    for ln in text.splitlines():
        if ln.startswith(key):
            return ln.split("\t", 1)[1]
    return None


def last_result(text):
    line = stats_line(text, "arch last:")
    assert line is not None, text
    w = line.split()
    out = {}
    i = 0
    while i < len(w):
        if w[i] == "ok":
            out["ok"] = True
            break
        if w[i] == "error":
            out["error"] = " ".join(w[i + 1:])
            break
        out[w[i]] = w[i + 1]
        i += 2
    return out


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


# --- trees over 9P ---------------------------------------------------------------------------


async def _snapshot(addr, top, skip_tmp=True):
    """{relative path: (mode, uid, gid, mtime, length, sha256)} of the tree at top."""
    c = await Client.connect(addr, aname="main")
    out = {}
    gate = asyncio.Semaphore(16)

    async def one(path, st):
        if st.mode & DMDIR:
            out[path] = (st.mode, st.uid, st.gid, st.mtime, 0, None)
            await walk(path)
        else:
            async with gate:
                data = await c.read_file(f"{top}/{path}")
            assert len(data) == st.length, path
            out[path] = (st.mode, st.uid, st.gid, st.mtime, st.length,
                         hashlib.sha256(data).hexdigest())

    async def walk(path):
        async with gate:
            ents = await c.listdir(f"{top}/{path}")
        jobs = [one(f"{path}/{st.name}" if path else st.name, st) for st in ents
                if not (skip_tmp and st.mode & DMTMP)]
        await asyncio.gather(*jobs)

    try:
        st = await c.stat_path(top)
        out[""] = (st.mode, st.uid, st.gid, st.mtime, 0, None)
        await walk("")
    finally:
        await c.close()
    return out


def snapshot(pair, which, top):
    return asyncio.run(_snapshot(f"unix!{pair.ns / which}", top))


def assert_same(got, want, what):
    if got == want:
        return
    missing = sorted(set(want) - set(got))[:5]
    extra = sorted(set(got) - set(want))[:5]
    differ = [(k, got[k], want[k]) for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    raise AssertionError(f"{what}: missing {missing} extra {extra} differ {differ[:5]}")


def archived(pair, path):
    return snapshot(pair, "rip", f"root/{path}")


async def _populate(addr, files, rng):
    """files: {path: bytes}; directories are made as needed."""
    c = await Client.connect(addr, aname="root")
    made = set()
    gate = asyncio.Semaphore(16)
    try:
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    await c.mkdir(d)
                    made.add(d)

        async def one(path, data):
            async with gate:
                await c.write_file(path, data)
        await asyncio.gather(*(one(p, d) for p, d in files.items()))
    finally:
        await c.close()


def populate(pair, files):
    asyncio.run(_populate(f"unix!{pair.ns / '9pix'}", files, None))


def make_tree(rng, nfiles, total, big=10, ndirs=50):
    """nfiles files in ndirs directories, about `total` bytes: `big` files of half the total
    between them, the rest small."""
    files = {}
    bigsize = total // 2 // big
    small_total = total - big * bigsize
    mean = small_total // (nfiles - big)
    for i in range(nfiles):
        d = f"d{i % ndirs:02d}"
        if i < big:
            files[f"{d}/big{i}"] = rng.randbytes(bigsize)
        else:
            files[f"{d}/f{i:05d}"] = rng.randbytes(rng.randrange(0, 2 * mean))
    return files


# --- acceptance: a large tree, a small change --------------------------------------------------


def test_second_archive_costs_the_change_not_the_tree(tmp_path):
    nfiles, total = 5000, 100 << 20
    rng = random.Random(4)
    p = Pair(tmp_path)
    try:
        files = make_tree(rng, nfiles, total)
        populate(p, files)
        assert "synced" in p.cons("sync")
        day1 = snapshot(p, "9pix", "root")
        assert p.cons("arch t 3").startswith("arch:\ttree t daily at 03:00 into rip")
        w0 = p.worm_used()
        first, t1 = p.archive("20240425")
        assert first.get("ok"), first
        w1 = p.worm_used()
        assert first["path"] == "t/2024/0425" and int(first["files"]) == nfiles
        assert_same(archived(p, "t/2024/0425"), day1, "day 1")

        # change 1 MiB over 10 files, remove 20, add 5
        c = p.c
        for i in range(10):
            f = c.walkpath(f"root/d{i:02d}/big{i}")
            c.open(f, 1)
            c.write(f, rng.randrange(0, total // 20 - (100 << 10)), rng.randbytes(100 << 10))
            c.clunk(f)
        smalls = sorted(k for k in files if "/f" in k)
        for k in rng.sample(smalls, 20):
            c.remove_path(f"root/{k}")
        for i in range(5):
            c.write_file(f"root/d{i:02d}/added{i}", rng.randbytes(20000))
        assert "synced" in p.cons("sync")
        day2 = snapshot(p, "9pix", "root")
        second, t2 = p.archive("20240426")
        assert second.get("ok"), second
        w2 = p.worm_used()
        assert_same(archived(p, "t/2024/0426"), day2, "day 2")
        assert_same(archived(p, "t/2024/0425"), day1, "day 1 after day 2")
        growth = (w2 - w1) * 16384
        report = (f"first archive: {nfiles} files {first['bytes']} bytes, "
                  f"{first['secs']} s (test saw {t1:.2f} s), WORM +{(w1 - w0) * 16384 >> 10} KiB; "
                  f"second: {second['files']} files {second['bytes']} bytes "
                  f"{second['removed']} removed, {second['blocks']} blocks read, "
                  f"{second['secs']} s (test saw {t2:.2f} s), WORM +{growth >> 10} KiB")
        print(report)
        assert growth < 3 << 20, report
        assert int(second["removed"]) == 20 and int(second["files"]) == 15, report
        r = creepy("check", p.worm_disk, env=p.env)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        p.close()


# --- every kind of change ----------------------------------------------------------------------


def test_every_kind_of_change_is_archived(pair):
    p, c = pair, pair.c
    rng = random.Random(7)
    p.cons(f"allow {c.stat_path('root').uid}")         # may give files to none and adm
    populate(p, {
        "keep/a": rng.randbytes(40000),
        "keep/deep/er/still": b"deep",
        "mv/old": rng.randbytes(300000),
        "mvdir/inner/x": rng.randbytes(5000),
        "shrink": rng.randbytes(200000),
        "regrow": rng.randbytes(200000),
        "sparse": b"start",
        "kind/f2d": b"file to become a directory",
        "kind/d2f/x": b"in a directory to become a file",
        "gone/x/y": b"whole tree removed",
        "took": b"a name another file will take",
        "append": b"log line 1\n",
        "empty": b"",
        "owned": b"owner and group",
    })
    wstat(c, "root/append", mode=DMAPPEND | 0o644)
    with SyncClient(f"unix!{p.ns / '9pix'}", aname="root", version="9P2000.L") as lc:
        d = lc.walkpath("keep")
        lc.symlink(d, "link", "deep/er/still")        # archived as what it is
        lc.clunk(d)
    assert "synced" in p.cons("sync")
    p.cons("arch t 4")
    day1 = snapshot(p, "9pix", "root")
    first, _ = p.archive("20240425")
    assert first.get("ok"), first
    assert_same(archived(p, "t/2024/0425"), day1, "day 1")
    assert day1["keep/link"][0] == DMSYMLINK | 0o777

    c.rename("root/mv/old", "new")                         # renamed: moved in rip, not copied
    c.rename("root/mvdir", "moveddir")
    c.truncate("root/shrink", 70000)
    c.truncate("root/regrow", 20000)                       # shrink, then write past the end:
    f = c.walkpath("root/regrow")                          # a hole over the old data
    c.open(f, 1)
    c.write(f, 150000, b"tail")
    c.clunk(f)
    f = c.walkpath("root/sparse")
    c.open(f, 1)
    c.write(f, 5 << 20, b"far away")                       # a file with a hole
    c.clunk(f)
    c.remove_path("root/kind/f2d")
    c.mkdir("root/kind/f2d")
    c.write_file("root/kind/f2d/in", b"now a directory")
    c.remove_path("root/kind/d2f/x")
    c.remove_path("root/kind/d2f")
    c.write_file("root/kind/d2f", b"now a file")
    for path in ("root/gone/x/y", "root/gone/x", "root/gone"):
        c.remove_path(path)
    c.remove_path("root/took")
    c.write_file("root/took", b"another file, same name")
    c.append("root/append", b"log line 2\n")
    c.write_file("root/empty", b"no longer empty")
    wstat(c, "root/owned", uid="none", gid="adm", mode=0o640)
    c.mkdir("root/tmp")
    f = c.walkpath("root/tmp")
    c.create(f, "scratch", DMTMP | 0o644, 1)               # not archived (stat(5))
    c.write(f, 0, b"scratch")
    c.clunk(f)
    assert "synced" in p.cons("sync")
    day2 = snapshot(p, "9pix", "root")                     # without DMTMP files
    second, _ = p.archive("20240425")                      # the same day again: 0425.1
    assert second.get("ok"), second
    assert second["path"] == "t/2024/0425.1"
    assert_same(archived(p, "t/2024/0425.1"), day2, "day 2")
    assert_same(archived(p, "t/2024/0425"), day1, "day 1 after day 2")
    assert int(second["renamed"]) == 2, second
    assert int(second["bytes"]) < 300000, second           # the renamed file was not copied

    w = p.worm_used()
    third, _ = p.archive("20240426")                       # nothing changed
    assert third.get("ok"), third
    assert int(third["files"]) == 0 and int(third["bytes"]) == 0, third
    assert_same(archived(p, "t/2024/0426"), day2, "day 3")
    assert p.worm_used() - w < 16, "an archive of an unchanged tree grew the WORM"
    log = p.r.read_file("root/t/.arch/log").decode().splitlines()
    assert [ln.split()[0] for ln in log] == ["2024/0425", "2024/0425.1", "2024/0426"]


def wstat(c, path, **fields):
    st = nochange()
    for k, v in fields.items():
        setattr(st, k, v)
    f = c.walkpath(path)
    try:
        c.wstat(f, st)
    finally:
        c.clunk(f)


# --- crashes ----------------------------------------------------------------------------------


def years(p):
    return sorted(s.name for s in p.r.listdir("root/t/2024"))


def assert_serving(p, tag):
    """The main server changes its tree while arch is stopped half way (a server waiting for
    arch would not answer before the client's deadline)."""
    p.c.write_file(f"root/alive-{tag}", tag.encode())
    assert p.c.read_file(f"root/alive-{tag}") == tag.encode()
    p.c.remove_path(f"root/alive-{tag}")


def test_killed_arch_leaves_a_partial_day_and_the_next_run_completes(tmp_path):
    pause = tmp_path / "pause"
    p = Pair(tmp_path, pause=pause)
    try:
        rng = random.Random(11)
        populate(p, make_tree(rng, 300, 6 << 20, big=3, ndirs=6))
        assert "synced" in p.cons("sync")
        p.cons("arch t 3")
        pause.write_text("40")
        assert p.cons("arch now 20240425").startswith("archiving")
        pid = p.wait_paused()
        p.rip_sync()                            # the half-made day is on rip's disk
        assert years(p) == ["0425.partial"]
        assert_serving(p, "paused")
        os.kill(pid, signal.SIGKILL)
        last = p.wait_idle()
        assert last["error"] == "arch killed by SIGKILL", last
        assert_serving(p, "killed")
        r = creepy("check", p.worm_disk, env=p.env)
        assert r.returncode == 0, r.stdout + r.stderr
        pause.unlink()
        tree = snapshot(p, "9pix", "root")      # what the next run archives
        last, _ = p.archive("20240425")
        assert last.get("ok"), last
        assert years(p) == ["0425"]             # the partial day is gone, the day complete
        assert_same(archived(p, "t/2024/0425"), tree, "after the killed run")
    finally:
        p.close()


def test_killed_rip_mid_archive_leaves_its_disk_whole(tmp_path):
    pause = tmp_path / "pause"
    p = Pair(tmp_path, pause=pause)
    try:
        rng = random.Random(12)
        files = make_tree(rng, 200, 4 << 20, big=2, ndirs=5)
        populate(p, files)
        assert "synced" in p.cons("sync")
        p.cons("arch t 3")
        day1 = snapshot(p, "9pix", "root")
        assert p.archive("20240425")[0].get("ok")
        for k in sorted(files)[:12]:                        # day 2: a dozen files change
            p.c.write_file(f"root/{k}", rng.randbytes(3000))
        assert "synced" in p.cons("sync")
        day2 = snapshot(p, "9pix", "root")
        pause.write_text("3")
        assert p.cons("arch now 20240426").startswith("archiving")
        p.wait_paused()
        p.rip_sync()
        p.rip.kill()                                        # rip dies half way through day 2
        pause.unlink()                                      # arch goes on and meets the loss
        last = p.wait_idle()
        assert "error" in last, last
        assert_serving(p, "rip-dead")
        r = creepy("check", p.worm_disk, env=p.env)
        assert r.returncode == 0, r.stdout + r.stderr
        p.restart_rip()
        assert years(p) == ["0425", "0426.partial"]        # synced before rip died
        assert_same(archived(p, "t/2024/0425"), day1, "day 1 after rip died")
        day2 = snapshot(p, "9pix", "root")      # assert_serving touched the root since
        last, _ = p.archive("20240426")
        assert last.get("ok"), last
        assert last["since"] != "-1", last                  # still incremental
        assert years(p) == ["0425", "0426"]
        assert_same(archived(p, "t/2024/0426"), day2, "day 2 after rip died")
        assert_same(archived(p, "t/2024/0425"), day1, "day 1 at the end")
    finally:
        p.close()


def test_the_commit_arch_reads_survives_sweeps(tmp_path):
    """9pix pins the commit while arch reads it: sweeps that reuse the rest of a small disk
    while arch waits half way must not reclaim a block of it."""
    pause = tmp_path / "pause"
    p = Pair(tmp_path, pause=pause, main_size="8M")
    try:
        rng = random.Random(13)
        files = make_tree(rng, 60, 2 << 20, big=2, ndirs=3)
        populate(p, files)
        assert "synced" in p.cons("sync")
        p.cons("arch t 3")
        tree = snapshot(p, "9pix", "root")
        pause.write_text("2")
        assert p.cons("arch now 20240425").startswith("archiving")
        p.wait_paused()
        for k in files:                     # the commit is now all arch has of them
            p.c.write_file(f"root/{k}", b"rewritten")
        for i in range(8):                  # 24 MiB through a disk of 8: the log goes round
            p.c.write_file("root/churn", rng.randbytes(3 << 20))
            assert "synced" in p.cons("sync")
            p.c.remove_path("root/churn")
            assert "synced" in p.cons("sync")
        sweeps = int(stats_line(p.stats(), "sweeps:").split()[0])
        assert sweeps >= 2, p.stats()
        pause.unlink()
        last = p.wait_idle()
        assert last.get("ok"), last
        assert_same(archived(p, "t/2024/0425"), tree, "the pinned commit")
        r = creepy("check", p.main_disk, env=p.env)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        p.close()


# --- any other file server: a local directory ------------------------------------------------


def test_archive_into_a_local_directory(pair, tmp_path):
    p = pair
    dump = tmp_path / "dump"
    dump.mkdir()
    rng = random.Random(3)
    populate(p, {"a/b/c": rng.randbytes(70000), "a/d": b"", "e": rng.randbytes(100)})
    wstat(p.c, "root/a/b", mode=DMDIR | 0o555)
    assert "synced" in p.cons("sync")
    assert f"daily at 02:00 into {dump}, next " in p.cons(f"arch loc 2 {dump}")
    want = snapshot(p, "9pix", "root")
    for day in ("0425", "0425.1"):
        last, _ = p.archive("20240425")
        assert last.get("ok"), last
        top = dump / "loc" / "2024" / day
        got = {}
        for d, dirs, files in os.walk(top):
            for n in dirs + files + ([""] if d == str(top) else []):
                path = os.path.join(d, n) if n else d
                rel = os.path.relpath(path, top)
                rel = "" if rel == "." else rel
                s = os.stat(path)
                isdir = os.path.isdir(path)
                data = None if isdir else open(path, "rb").read()
                got[rel] = (s.st_mode & 0o777, int(s.st_mtime), 0 if isdir else len(data),
                            None if isdir else hashlib.sha256(data).hexdigest())
        assert got == {k: (v[0] & 0o777, v[3], v[4], v[5]) for k, v in want.items()}
    assert (dump / "loc" / ".arch" / "log").read_text().count("since -1") == 2


# --- the console -------------------------------------------------------------------------------


def test_console_commands(pair):
    p = pair
    assert p.cons("arch") == "arch:\tnone\narch run:\tidle"
    assert p.cons("arch now").startswith("arch: not configured")
    assert p.cons("arch t 24").startswith("arch: bad hour")
    assert p.cons("arch t x").startswith("arch: bad hour")
    assert p.cons("arch now 2024").startswith("arch: bad day")
    assert p.cons("arch t 5").startswith("arch:\ttree t daily at 05:00 into rip")
    assert "arch:\ttree t daily at 05:00" in p.stats()
    assert p.cons("arch none") == "arch:\tnone"
    assert "arch:\tnone" in p.stats()
    p.cons(f"arch t 5 {p.ns / 'nosuch'}")                  # rip is not there
    last, _ = p.archive("20240425")
    assert "error" in last and "nosuch" in last["error"], last
    assert_serving(p, "after-error")


def test_next_run_is_the_next_time_the_clock_reads_the_hour():
    import datetime
    now = datetime.datetime(2024, 4, 25, 10, 30).timestamp()
    assert datetime.datetime.fromtimestamp(next_run(now, 11)) == datetime.datetime(2024, 4, 25, 11)
    assert datetime.datetime.fromtimestamp(next_run(now, 10)) == datetime.datetime(2024, 4, 26, 10)
    assert datetime.datetime.fromtimestamp(next_run(now, 3)) == datetime.datetime(2024, 4, 26, 3)


def test_arch_is_not_run_by_hand(tmp_path):
    r = subprocess.run([sys.executable, "-m", "creepy", "arch"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, env=env_for(tmp_path), timeout=DEADLINE)
    assert r.returncode == 2 and "started by 9pix" in r.stderr, r.stderr


# --- the pipe ----------------------------------------------------------------------------------


def test_arch_verifies_every_block_9pix_sends(tmp_path):
    """9pix checks only bounds; a block that is not what its pointer says is refused by arch."""
    import socket
    from creepy.arch import PipeDisk, serve_blocks, changed_blocks, read_data
    from creepy.errors import CorruptBlock
    from creepy.store.disk import Disk
    from creepy.store.format import encode_block, DATA
    from creepy.store.sweep import TreeReader

    path = tmp_path / "d"
    disk = Disk.create(str(path), 64 * 1024)
    disk.pwrite(20 * 1024, encode_block(DATA, 20, 5, b"x" * 10, 1024))
    disk.pwrite(21 * 1024, encode_block(DATA, 22, 5, b"y" * 10, 1024))   # claims another addr
    ours, theirs = socket.socketpair()
    t = threading.Thread(target=serve_blocks, args=(ours, disk, 1024, 4, 64, {"version": 1}))
    t.start()
    from creepy.arch import read_frame
    assert read_frame(theirs)[0] == b"H"
    reader = TreeReader(PipeDisk(theirs, 1024), 1024, 6)
    assert read_data(reader, [(20, 5)])[0][:10] == b"x" * 10
    for ref, why in (((21, 5), "claims address"), ((20, 4), "pointer expects era 4"),
                     ((99, 5), "outside the log"), ((30, 5), "never written")):
        with pytest.raises(CorruptBlock, match=why):
            read_data(reader, [ref])
    e = ["f", 9, 0o644, "u", "g", "u", 0, 0, 10, 0, 5, 20, 5, 0]
    assert changed_blocks(reader, e, 4) == ([(0, 20, 5)], [])
    assert changed_blocks(reader, e, 5) == ([], [])
    theirs.close()
    t.join(5)
    assert not t.is_alive()
    disk.close()
