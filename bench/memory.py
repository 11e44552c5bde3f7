"""Memory benchmark: serve a tree far larger than the cache and read all of it.

    python bench/memory.py [-d DIR] [--files N] [--gib G] [-c MiB]

Builds a disk holding N files (default 200,000) with G GiB of data (default 4) through the
store, then runs `creepy 9pix -c MiB` (default 64) on it and, with our 9P client, walks every
directory and reads every file.  It reports the server's start-up time and its peak RSS
(VmHWM), beside the same server's peak RSS after the same walk of a tree a tenth the size:
the difference between the two is what grows with the tree (it should be close to nothing),
and what the small run needs beyond -c is the fixed overhead (interpreter, modules, sockets).
"""

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time

from harness import MiB, Served, vm                  # and the repository on sys.path
from creepy.ninep.client import Client               # noqa: E402
from creepy.store.disk import Disk                    # noqa: E402
from creepy.store.format import DMDIR                 # noqa: E402
from creepy.store.store import Store                  # noqa: E402

PER_DIR = 500


def build(path, nfiles, nbytes, seed=1):
    """A disk with nfiles files in directories of PER_DIR, nbytes of data in all."""
    disk = Disk.create(path, nbytes * 2 + 1024 * MiB)       # sparse; blocks round files up
    Store.format(disk, owner=os.environ.get("USER", "bench"), bsize=16384)
    st = Store.open(disk, cache_bytes=64 * MiB)
    rng = random.Random(seed)
    avg = nbytes // nfiles
    pool = os.urandom(4 * MiB)
    written = 0
    t0 = time.perf_counter()
    d = None
    for i in range(nfiles):
        if i % PER_DIR == 0:
            d = st.create(st.root, f"d{i // PER_DIR:04d}", DMDIR | 0o755, "bench", "bench", 1)
        size = rng.randrange(1, 2 * avg)
        f = st.create(d, f"f{i:06d}", 0o644, "bench", "bench", 1)
        off = rng.randrange(0, len(pool) - size) if size < len(pool) else 0
        st.write(f, 0, pool[off:off + size])
        st.changed(f)
        written += size
        if st.dirty_bytes() > 256 * MiB:
            st.sync_now()
    st.sync_now()
    st.close()
    disk.close()
    return written, time.perf_counter() - t0


async def walk_and_read(addr, inflight=8):
    c = await Client.connect(addr, aname="")
    total = files = 0
    dirs = [s.name for s in await c.listdir("")]
    sem = asyncio.Semaphore(inflight)

    async def one(path):
        nonlocal total, files
        async with sem:
            data = await c.read_file(path)
            total += len(data)
            files += 1

    for d in dirs:
        names = [s.name for s in await c.listdir(d)]
        await asyncio.gather(*(one(f"{d}/{n}") for n in names))
    await c.close()
    return files, total


def run(tmp, nfiles, gib, cache):
    path = os.path.join(tmp, f"disk{nfiles}")
    written, t_build = build(path, nfiles, int(gib * (1 << 30)))
    srv = Served(tmp, ["-c", str(cache), "-i", "3600"], disk=path)
    started = srv.started_s
    try:
        base = vm(srv.pid, "VmRSS")
        t0 = time.perf_counter()
        files, total = asyncio.run(walk_and_read(srv.addr))
        t_read = time.perf_counter() - t0
        peak = vm(srv.pid, "VmHWM")
    finally:
        srv.stop()
    assert files == nfiles and total == written, (files, nfiles, total, written)
    os.unlink(path)
    return dict(files=files, bytes=total, build_s=t_build, start_s=started, read_s=t_read,
                peak=peak, base=base)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-d", help="directory for the disks (default: a temporary one)")
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("-c", type=int, default=64, help="the server's -c (MiB)")
    a = ap.parse_args()
    tmp = a.d or tempfile.mkdtemp(prefix="creepy-mem-")
    try:
        small = run(tmp, a.files // 10, a.gib / 10, a.c)
        big = run(tmp, a.files, a.gib, a.c)
    finally:
        if not a.d:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"creepy memory benchmark: -c {a.c} MiB")
    for name, r in (("tenth", small), ("full", big)):
        print(f"  {name:5} {r['files']:7d} files {r['bytes'] / (1 << 30):5.2f} GiB: "
              f"start-up {r['start_s']:.2f} s, RSS after start-up {r['base'] / MiB:5.1f} MiB, "
              f"walk+read {r['read_s']:6.1f} s ({r['bytes'] / r['read_s'] / MiB:4.0f} MiB/s), "
              f"peak RSS {r['peak'] / MiB:5.1f} MiB = start-up + "
              f"{(r['peak'] - r['base']) / MiB:5.1f} MiB")
    fixed = big["base"]
    limit = a.c * MiB + fixed
    print(f"  fixed overhead: the server's RSS after start-up, {fixed / MiB:.1f} MiB "
          f"(interpreter, modules, sockets; the same for both trees)")
    print(f"  full tree peak {big['peak'] / MiB:.1f} MiB vs -c + fixed = {limit / MiB:.1f} MiB: "
          f"{'PASS' if big['peak'] <= limit else 'MISS'}; growth from a tenth to the full tree "
          f"{(big['peak'] - small['peak']) / MiB:+.1f} MiB")
    print(f"  start-up on the full disk: {big['start_s']:.2f} s (goal < 1 s: "
          f"{'PASS' if big['start_s'] < 1 else 'MISS'})")


if __name__ == "__main__":
    main()
