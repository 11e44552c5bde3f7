"""arch benchmark: an incremental archive against a full one, and a tree 10,000 deep.

    python bench/arch.py [--only two-days|deep] [--runs R] [--files N] [--mib M] [--depth D]

Both scenarios run the real programs (creepy fmt, 9pix, rip, arch, history) as
tests/test_arch.py does, in a temporary directory, and print one table; with --runs, the
median of R runs of each figure.

two-days   the acceptance run of issue 4: N files (5,000) holding M MiB (100) in 50
           directories, archived whole; then 1 MiB changed over 10 files, 20 files removed and
           5 added, and archived again.  Times are arch's own (from its start to its result),
           beside what the caller saw (console `arch now` until /stats says idle).  The goal
           is second/first under 0.1: the cost follows the change, not the tree.
deep       a chain of D directories (10,000) with a file at the bottom, made over 9P one name
           per walk; sync; arch into rip (day 1, whole); the bottom file changed, sync, arch
           again (day 2, incremental: every directory on the way changed); `creepy history` of
           the bottom file; arch into a local directory (a full copy, paths far past
           PATH_MAX).  Goal: every step in proportion to D (twice D, twice the time).
"""

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from test_arch import Pair, make_tree, populate                  # noqa: E402
from test_deep_archive import LEAF, _chain, remove_local         # noqa: E402


def two_days(tmp, nfiles, mib):
    rng = random.Random(4)
    p = Pair(tmp)
    try:
        populate(p, make_tree(rng, nfiles, mib << 20))
        assert "synced" in p.cons("sync")
        p.cons("arch t 3")
        w0 = p.worm_used()
        first, seen1 = p.archive("20240425")
        w1 = p.worm_used()
        assert first.get("ok"), first
        c = p.c
        for i in range(10):
            f = c.walkpath(f"root/d{i:02d}/big{i}")
            c.open(f, 1)
            c.write(f, rng.randrange(0, (mib << 20) // 20 - (100 << 10)),
                    rng.randbytes(100 << 10))
            c.clunk(f)
        smalls = sorted(s.name for s in c.listdir("root/d10"))
        for name in smalls[:20]:
            c.remove_path(f"root/d10/{name}")
        for i in range(5):
            c.write_file(f"root/d{i:02d}/added{i}", rng.randbytes(20000))
        assert "synced" in p.cons("sync")
        second, seen2 = p.archive("20240426")
        assert second.get("ok"), second
        w2 = p.worm_used()
    finally:
        p.close()
    a, b = float(first["secs"]), float(second["secs"])
    return {"first archive s": a, "first, seen s": seen1, "second archive s": b,
            "second, seen s": seen2, "second/first": b / a,
            "WORM growth, first MiB": (w1 - w0) * 16384 / (1 << 20),
            "WORM growth, second MiB": (w2 - w1) * 16384 / (1 << 20)}


def deep(tmp, depth):
    p = Pair(tmp)
    local = tmp / "local"
    out = {}
    t = time.perf_counter()

    def lap(what):
        nonlocal t
        now = time.perf_counter()
        out[what] = now - t
        t = now

    try:
        asyncio.run(_chain(f"unix!{p.ns / '9pix'}", depth, b"day one\n"))
        lap("create the chain s")
        assert "synced" in p.cons("sync")
        lap("sync s")
        inside = "/".join(["d"] * depth + [LEAF])
        p.cons("arch t 3")
        first, _ = p.archive("20240425")
        assert first.get("ok"), first
        lap("arch day 1 s")
        p.c.write_file(f"root/{inside}", b"day two\n")
        assert "synced" in p.cons("sync")
        t = time.perf_counter()
        second, _ = p.archive("20240426")
        assert second.get("ok"), second
        lap("arch day 2 s")
        r = subprocess.run([sys.executable, "-m", "creepy", "history", "-a",
                            f"unix!{p.ns / 'rip'}", "-t", "t", inside], env=p.env,
                           capture_output=True, text=True)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
        lap("history s")
        local.mkdir()
        p.cons(f"arch loc 3 {local}")
        third, _ = p.archive("20240427")
        assert third.get("ok"), third
        lap("arch into a directory s")
    finally:
        p.close()
        if local.exists():
            remove_local(str(local))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("two-days", "deep"))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--depth", type=int, default=10_000)
    a = ap.parse_args()
    jobs = [("two-days", lambda tmp: two_days(tmp, a.files, a.mib)),
            ("deep", lambda tmp: deep(tmp, a.depth))]
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for name, job in jobs:
        if a.only not in (None, name):
            continue
        runs = []
        for i in range(a.runs):
            with tempfile.TemporaryDirectory(prefix="creepy-bench-arch-") as tmp:
                runs.append(job(Path(tmp)))
            print(f"{name}: run {i + 1} of {a.runs} done", file=sys.stderr)
        label = f"{name} ({a.files} files, {a.mib} MiB)" if name == "two-days" else \
            f"{name} ({a.depth} levels)"
        print(label)
        for k in runs[0]:
            print(f"  {k:28s} {statistics.median(r[k] for r in runs):10.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
