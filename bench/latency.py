"""Latency while the server syncs: does a big sync hold the event loop?

    python bench/latency.py [--entries 200000] [--mib 512] [-d DIR]

It serves a fresh disk with `creepy 9pix` (its own process), and a second process of ours runs
a loop of Tstat requests on its own connection, one at a time, recording every round trip
with the time it was sent.  Meanwhile this program
  1. lets the loop run alone for a few seconds (idle),
  2. creates a directory of `--entries` empty files (64 creates in flight) and asks for the
     first sync of it on the console,
  3. writes `--mib` MiB into files (8 writes of 1 MiB in flight) and asks for their sync,
and prints p50, p99 and the worst round trip of the stat loop in each window: idle, while
the directory is synced, while the data is synced; and the duration of each sync and of its
freeze (/stats).  Target (issue 7): p99 under 100 ms during both syncs.

Nothing here is a test; run it on a quiet machine and read the table.
"""

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time

from harness import MiB, Served, StatLoop, percentiles   # and the repository on sys.path
from creepy.ninep.client import Client               # noqa: E402
from creepy.ninep.codec import DMDIR, OREAD, OWRITE   # noqa: E402


async def cons(c, line):
    return await c.cons(line, timeout=3600)


async def make_dir(c, entries):
    top = await c.walkpath("root")
    await c.create(top, "big", DMDIR | 0o755, OREAD)
    sem = asyncio.Semaphore(64)

    async def one(i):
        async with sem:
            f = await c.walkpath("root/big")
            await c.create(f, f"file{i:07d}", 0o644, OWRITE)
            await c.clunk(f)
    await asyncio.gather(*(one(i) for i in range(entries)))
    await c.clunk(top)


async def write_data(c, mib):
    piece = os.urandom(MiB)
    files = 8
    for k in range(files):
        f = await c.walkpath("root")
        await c.create(f, f"data{k}", 0o644, OWRITE)
        sem = asyncio.Semaphore(8)

        async def one(off, f=f):
            async with sem:
                await c.write(f, off, piece)
        await asyncio.gather(*(one(i * MiB) for i in range(mib // files)))
        await c.clunk(f)


async def prepare_then_sync(c, marks, name, prepare, what):
    """Run prepare, let the loop settle, then time a console sync as the window `name`;
    return /stats as it is after the sync."""
    t = time.perf_counter()
    await prepare
    print(f"{what} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    reply = await cons(c, "sync")
    marks[name] = (t0, time.monotonic())
    print(f"{name}: {reply.strip()}", file=sys.stderr)
    return (await c.read_file("stats")).decode()


async def main_async(a, port):
    c = await Client.connect(f"tcp!127.0.0.1!{port}", aname="main")
    marks = {}
    await asyncio.sleep(a.idle)
    marks["idle"] = (time.monotonic() - a.idle, time.monotonic())
    dir_stats = await prepare_then_sync(c, marks, "dir sync", make_dir(c, a.entries),
                                        f"created {a.entries} entries")
    data_stats = await prepare_then_sync(c, marks, "data sync", write_data(c, a.mib),
                                         f"wrote {a.mib} MiB")
    await c.close()
    return marks, dir_stats, data_stats


def freeze_ms(text):
    m = re.search(r"^freeze:\t([\d.]+) ms, (\d+) slices", text, re.M)
    return (float(m.group(1)), int(m.group(2))) if m else (None, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--mib", type=int, default=500,
                    help="MiB to write and sync (9pix syncs by itself past 512 MiB of dirty "
                         "blocks; 500 MiB of data is about 512 MiB of blocks)")
    ap.add_argument("--idle", type=float, default=3.0)
    ap.add_argument("-d", default=None, help="directory for the disk (default: a temporary one)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.d) as tmp:
        srv = Served(tmp, ["-i", "3600", "-c", "4096"], size="4G")
        loop = StatLoop(srv.port)
        try:
            marks, dstats, fstats = asyncio.run(main_async(a, srv.port))
        finally:
            samples, error = loop.stop()
            srv.stop()
    if error:
        print(f"the stat loop ended early: {error}", file=sys.stderr)
    print(f"Tstat round trips of another client (ms), {a.entries} entries, {a.mib} MiB")
    print(f"{'window':<12}{'seconds':>9}{'stats':>9}{'p50':>9}{'p99':>9}{'max':>9}")
    for name, (lo, hi) in marks.items():
        p = percentiles(samples, lo, hi)
        n, p50, p99, mx = p
        print(f"{name:<12}{hi - lo:>9.2f}{n:>9}{p50 * 1e3:>9.2f}{p99 * 1e3:>9.2f}"
              f"{mx * 1e3:>9.2f}")
    for name, text in (("dir sync", dstats), ("data sync", fstats)):
        ms, slices = freeze_ms(text)
        print(f"{name}: freeze {ms} ms in {slices} slices")


if __name__ == "__main__":
    main()
