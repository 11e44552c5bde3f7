"""Storage benchmark: sync throughput against raw append, sweep cost, check speed.

    python bench/storage.py [-d DIR] [-m MiB]

From one run, on one disk file in DIR (default: a temporary directory), it prints
  - sync throughput when writing large files: the store's freeze + write + commit of N MiB of
    fresh file data, against raw sequential append of the same bytes with one fsync to the
    same disk file (goal: at least 0.7, Sprite LFS's figure), and the whole write + sync path;
  - sweep time per million blocks: a mark and sweep of the tree just written, scaled;
  - creepy check MB/s over the same disk.
Numbers are medians of three runs where a run is cheap, and ratios come from the same run.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from creepy.check import check_disk                  # noqa: E402
from creepy.store.disk import Disk                   # noqa: E402
from creepy.store.format import DMDIR                # noqa: E402
from creepy.store.store import Store                 # noqa: E402

MiB = 1 << 20


def raw_append(path, offset, nbytes, chunk=MiB):
    """Sequential pwrite of nbytes at offset in chunk-sized writes, then one fsync."""
    buf = os.urandom(chunk)
    fd = os.open(path, os.O_RDWR)
    try:
        t0 = time.perf_counter()
        off, end = offset, offset + nbytes
        while off < end:
            os.pwrite(fd, buf, off)
            off += chunk
        os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def fill(st, mib, files=8):
    """Write mib MiB of fresh data into `files` large files (in memory, not yet synced)."""
    d = st.create(st.root, f"big{st.era}", DMDIR | 0o755, "bench", "bench", 1)
    per = mib * MiB // files
    piece = os.urandom(MiB)
    t0 = time.perf_counter()
    for i in range(files):
        f = st.create(d, f"f{i}", 0o644, "bench", "bench", 1)
        for off in range(0, per, MiB):
            st.write(f, off, piece)
        st.changed(f)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-d", help="directory for the disk file (default: a temporary one)")
    ap.add_argument("-m", type=int, default=256, help="MiB written per sync run (default 256)")
    ap.add_argument("-b", type=int, default=16384, help="block size (default 16K)")
    a = ap.parse_args()
    tmp = a.d or tempfile.mkdtemp(prefix="creepy-bench-")
    path = os.path.join(tmp, "bench.disk")
    size = a.m * MiB * 8
    disk = Disk.create(path, size)
    Store.format(disk, owner="bench", bsize=a.b)
    st = Store.open(disk, cache_bytes=64 * MiB)
    raw_region = size - a.m * MiB * 4          # far from where the log writes

    rows = []
    syncs, raws, ends = [], [], []
    for run in range(3):
        # raw append first, into a fresh sparse region of the same file
        raws.append(a.m * MiB / raw_append(path, raw_region + run * a.m * MiB, a.m * MiB))
        t_fill = fill(st, a.m)
        t0 = time.perf_counter()
        st.sync_now()
        t_sync = time.perf_counter() - t0
        syncs.append(a.m * MiB / t_sync)
        ends.append(a.m * MiB / (t_fill + t_sync))
    sync_bw, raw_bw, end_bw = (statistics.median(x) / MiB for x in (syncs, raws, ends))
    rows.append(("sync of fresh large files", f"{sync_bw:8.0f} MiB/s",
                 f"raw append+fsync {raw_bw:6.0f} MiB/s", f"{sync_bw / raw_bw:5.2f}",
                 "goal >= 0.70", "PASS" if sync_bw / raw_bw >= 0.7 else "MISS"))
    rows.append(("write + sync (store API)", f"{end_bw:8.0f} MiB/s",
                 f"raw append+fsync {raw_bw:6.0f} MiB/s", f"{end_bw / raw_bw:5.2f}", "", ""))

    # sweep: mark the whole committed tree, write the marks
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        st.sweep_now()
        times.append(time.perf_counter() - t0)
    live = st.stats["swept_live"]
    t_sweep = statistics.median(times)
    rows.append(("sweep", f"{t_sweep * 1e6 / live:8.2f} s/Mblk",
                 f"{live} live blocks in {t_sweep * 1e3:.0f} ms", "", "", ""))

    # check: read and verify every reachable block
    t0 = time.perf_counter()
    rep = check_disk(path)
    t_check = time.perf_counter() - t0
    rows.append(("creepy check", f"{rep.bytes / t_check / MiB:8.0f} MiB/s",
                 f"{rep.blocks} blocks, {len(rep.errors)} errors", "", "", ""))
    st.close()

    print(f"creepy storage benchmark: {a.m} MiB per run, {a.b}-byte blocks, disk {path}")
    w = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
    if not a.d:
        os.unlink(path)
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
