"""A tree 10,000 directories deep, end to end (DESIGN invariant 10: depth costs no stack).

Through the real programs: 9pix holds the chain and commits it, survives a SIGKILL and a
restart, `creepy check` passes on its disk; arch archives it into rip on two days (the second
incrementally, after the file at the bottom changed) and into a local directory, where its
paths are far longer than PATH_MAX; `creepy check` passes on the WORM; `creepy history` lists
both versions of the bottom file and `creepy yesterday` names the older one.  The chain is
made the way a careful client makes it, one name per walk from the parent's fid.

The time each step takes is printed (pytest -s); bench/arch.py measures the same steps.  The
last test drives the handles arch holds alone, on a local tree 3,000 deep, with the recursion
limit lowered so that any per-level recursion fails.
"""

import asyncio
import os
import subprocess
import sys
import time

from creepy.arch import Archive, DestDir, Place
from creepy.ninep.client import Client
from creepy.ninep.codec import DMDIR, OREAD
from test_arch import DEADLINE, Pair, creepy

DEPTH = 10_000
LEAF = "leaf"


async def _chain(addr, depth, data):
    """depth directories named d, each in the one before, under the root; LEAF holding data in
    the last.  Every directory is created and walked from its parent's fid."""
    c = await Client.connect(addr, aname="root")
    try:
        f = await c.walkpath("")
        for _ in range(depth):
            g = await c.walkpath("", f)         # Tcreate turns the fid into the new directory
            await c.create(g, "d", DMDIR | 0o755, OREAD)
            c.clunk_soon(g)
            h = await c.walkpath("d", f)
            c.clunk_soon(f)
            f = h
        await c.write_file(LEAF, data, fid=f)
        await c.clunk(f)
    finally:
        await c.close()


def run(p, *args):
    """A creepy command as a user runs it, against the pair's name space."""
    r = subprocess.run([sys.executable, "-m", "creepy", *args], capture_output=True, text=True,
                       env=dict(p.env, TZ="UTC"), timeout=DEADLINE * 3)
    assert r.returncode == 0, f"creepy {args[0]}: {r.returncode}\n{r.stderr[-2000:]}"
    return r.stdout.splitlines()


def read_local(top, names):
    """The bytes of the file at top/names..., opened one name at a time (openat)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in names[:-1]:
            nfd = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(names[-1], os.O_RDONLY, dir_fd=fd)
        with open(ffd, "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def remove_local(top):
    """rm -r of a tree deeper than PATH_MAX and than shutil.rmtree's recursion can go: one
    directory descriptor open at a time, down by name and up by '..'."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    names = []
    try:
        while True:
            with os.scandir(fd) as it:
                kids = [(k.name, k.is_dir(follow_symlinks=False)) for k in it]
            sub = next((n for n, isdir in kids if isdir), None)
            if sub is not None:
                os.chmod(sub, 0o755, dir_fd=fd)
                down = os.open(sub, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = down
                names.append(sub)
                continue
            for n, _ in kids:
                os.unlink(n, dir_fd=fd)
            if not names:
                break
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(top)


def test_a_tree_10000_deep_is_committed_restarted_checked_archived_and_has_a_history(tmp_path):
    p = Pair(tmp_path)
    local = tmp_path / "local"
    times = {}
    t = time.perf_counter()

    def lap(what):
        nonlocal t
        now = time.perf_counter()
        times[what] = now - t
        t = now

    try:
        asyncio.run(_chain(f"unix!{p.ns / '9pix'}", DEPTH, b"day one\n"))
        lap("chain")
        assert "synced" in p.cons("sync")
        p.restart_9pix()
        lap("sync+restart")
        r = creepy("check", p.main_disk, env=p.env)
        assert r.returncode == 0, r.stdout + r.stderr
        lap("check 9pix")

        inside = "/".join(["d"] * DEPTH + [LEAF])
        assert p.c.read_file(f"root/{inside}") == b"day one\n"
        assert p.cons("arch t 3").startswith("arch:\ttree t daily at 03:00 into rip")
        first, _ = p.archive("20240425")
        lap("arch day 1")
        assert first.get("ok"), first
        assert int(first["dirs"]) == DEPTH + 1 and int(first["files"]) == 1, first

        p.c.write_file(f"root/{inside}", b"day two, longer\n")
        assert "synced" in p.cons("sync")
        second, _ = p.archive("20240426")
        lap("arch day 2")
        assert second.get("ok"), second
        assert second["since"] == first["era"], second          # incremental
        assert int(second["files"]) == 1 and int(second["bytes"]) == 16, second
        r = creepy("check", p.worm_disk, env=p.env)
        assert r.returncode == 0, r.stdout + r.stderr
        lap("check WORM")
        assert p.r.read_file(f"root/t/2024/0425/{inside}") == b"day one\n"
        assert p.r.read_file(f"root/t/2024/0426/{inside}") == b"day two, longer\n"

        rip = f"unix!{p.ns / 'rip'}"
        out = run(p, "history", "-u", "-a", rip, "-t", "t", inside)
        lap("history")
        want = [(f"/t/2024/0426/{inside}", "16"), (f"/t/2024/0425/{inside}", "8")]
        assert [tuple(ln.split()[5:7]) for ln in out] == want, [ln[-80:] for ln in out]
        out = run(p, "yesterday", "-a", rip, "-t", "t", "-d", "20240425", inside)
        assert out == [f"/t/2024/0425/{inside}"]

        local.mkdir()
        assert p.cons(f"arch loc 3 {local}").startswith("arch:\ttree loc")
        third, _ = p.archive("20240427")
        lap("arch local")
        assert third.get("ok"), third
        day = ["loc", "2024", "0427"]
        assert len("/".join(day + ["d"] * DEPTH)) > os.pathconf(local, "PC_PATH_MAX")
        assert read_local(local, day + ["d"] * DEPTH + [LEAF]) == b"day two, longer\n"
    finally:
        p.close()
        if local.exists():
            remove_local(str(local))
        print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))


# --- the handles arch holds, alone -------------------------------------------------------------


class CountingDir(DestDir):
    """A local directory destination that counts what Places makes it do."""

    def __init__(self, root, handles):
        super().__init__(root)
        self.handles = handles
        self.held = self.most = self.names = 0

    async def walk(self, d, names):
        h = await super().walk(d, names)
        self.held += 1
        self.most = max(self.most, self.held)
        self.names += len(names)
        return h

    async def release(self, d):
        self.held -= 1
        await super().release(d)


def test_a_deep_local_tree_is_walked_with_few_handles_and_removed_without_recursion(tmp_path):
    """Places keeps at most dest.handles directory handles, finds any directory again with a
    walk of a few names (never one from the top: the names walked grow with the depth, not
    its square), and remove_tree empties a tree deeper than PATH_MAX and than the recursion
    limit allows, with handles to spare."""
    depth, bound = 3000, 16
    top = tmp_path / "top"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(depth):
        os.mkdir("d", dir_fd=fd)
        down = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = down
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"x")
    os.chmod(fd, 0o555)                                 # as arch leaves a read-only directory
    os.close(fd)
    dest = CountingDir(str(top), bound)

    async def main():
        await dest.connect()
        a = Archive({"bsize": 16384, "era": 1, "name": "t"}, None, dest)
        places = [a.places.top]
        for i in range(depth):
            places.append(Place(places[-1], "d"))
        for p in places[1:]:                            # down, as the first archive goes
            assert await a.on(p, dest.stat, "f") is not None
        for p in reversed(places[1:]):                  # and up again, as directories end
            await a.on(p, dest.stat, "f")
            await a.places.done(p)
        assert dest.most <= bound + 1 and dest.held == 0, (dest.most, dest.held)
        assert dest.names < 20 * depth, dest.names     # from the top each time: 4.5 million
        st = await dest.stat(dest.top, "d")
        gone = await a.remove_tree(a.places.top, "d", st)
        await dest.close()
        return gone

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(250)
    try:
        gone = asyncio.run(main())
    finally:
        sys.setrecursionlimit(old)
    assert gone == 2 * depth and os.listdir(top) == [] and dest.held == 0
