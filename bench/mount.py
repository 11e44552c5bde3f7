"""creepy mount beside the raw 9P client: the same workloads, the same server, one run.

    .venv/bin/python bench/mount.py                 # about 30 s; prints one table
    .venv/bin/python bench/mount.py --mib 64 --files 500    # a quick look

Starts `creepy 9pix` as bench.py does (a fresh 2 GiB disk, -c 2048, -i 3600: writes land in
the server's memory, no periodic sync), mounts it with `creepy mount -f` over the posted Unix
socket, and runs each workload twice, through the mount (plain system calls from this
process) and through creepy.ninep.client.Client on a connection of its own to the same
socket:

    seq write     MB/s: one file of --mib MiB written from offset 0 in 1 MiB writes
                  (mount: os.write; client: Twrite, 8 in flight, as `creepy 9p put` does)
    seq read      MB/s: the file the client wrote, read from offset 0 in 1 MiB reads, through
                  the mount first (cold: its page cache holds none of it), then by the client
    create        files/s: --files files of 1 KiB made one after the other in a fresh
                  directory (mount: open O_CREAT, write, close; client: walk, create, write,
                  clunk)
    stat          calls/s: os.stat of those files by name, after the attribute cache has
                  expired (mount: lookup or getattr; client: walk, stat, clunk)

The server is synced (console `sync`) between workloads, so that no sync forced by the dirty
data of one lands in the next.  The ratio column is mount/client.  Needs /dev/fuse, pyfuse3 and fusermount3, like the mount.
Nothing here is a test; the numbers are noisy on a 2-CPU machine (the header prints the load).
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import env, start_creepy  # noqa: E402  (bench/bench.py)
from creepy.ninep.client import Client  # noqa: E402
from creepy.ninep.codec import OWRITE  # noqa: E402

MiB = 1 << 20


def mount(addr, mnt):
    """`creepy mount -f addr mnt` as a child; returns it once it says it has mounted."""
    os.makedirs(mnt, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-m", "creepy", "mount", "-f", addr, mnt],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env())
    said = []

    def collect():
        for line in p.stderr:
            said.append(line.decode("utf-8", "replace"))
    threading.Thread(target=collect, daemon=True).start()
    end = time.monotonic() + 60
    while not os.path.ismount(mnt):
        if p.poll() is not None or time.monotonic() > end:
            p.kill()
            raise SystemExit("bench: creepy mount did not mount:\n" + "".join(said))
        time.sleep(0.05)
    return p


# -- through the mount --------------------------------------------------------------------------

def m_write(path, nbytes):
    buf = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    for _ in range(nbytes // MiB):
        os.write(fd, buf)
    t1 = time.perf_counter()
    os.close(fd)
    return nbytes / (t1 - t0) / 1e6


def m_read(path):
    fd = os.open(path, os.O_RDONLY)
    n = 0
    t0 = time.perf_counter()
    while True:
        got = os.read(fd, MiB)
        if not got:
            break
        n += len(got)
    t1 = time.perf_counter()
    os.close(fd)
    return n / (t1 - t0) / 1e6


def m_create(d, nfiles):
    os.mkdir(d)
    data = b"x" * 1024
    t0 = time.perf_counter()
    for i in range(nfiles):
        fd = os.open(os.path.join(d, f"f{i:05d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
    return nfiles / (time.perf_counter() - t0)


def m_stat(d, nfiles, wait):
    time.sleep(wait)                    # let the kernel's attribute cache expire
    t0 = time.perf_counter()
    for i in range(nfiles):
        os.stat(os.path.join(d, f"f{i:05d}"))
    return nfiles / (time.perf_counter() - t0)


# -- through the client -------------------------------------------------------------------------

async def c_write(addr, path, nbytes):
    c = await Client.connect(addr)
    try:
        buf = os.urandom(MiB)
        fid = await c._open_or_create(path, 0o644, OWRITE)
        t0 = time.perf_counter()
        for off in range(0, nbytes, 8 * MiB):      # 8 Twrites of 1 MiB in flight
            chunk = buf * min(8, (nbytes - off) // MiB)
            await c.write(fid, off, chunk)
        t1 = time.perf_counter()
        await c.clunk(fid)
        return nbytes / (t1 - t0) / 1e6
    finally:
        await c.close()


async def c_read(addr, path):
    c = await Client.connect(addr)
    try:
        fid = await c.walkpath(path)
        await c.open(fid, 0)
        t0 = time.perf_counter()
        n = 0
        while True:
            got = await c.read(fid, n, MiB)
            if not got:
                break
            n += len(got)
        t1 = time.perf_counter()
        await c.clunk(fid)
        return n / (t1 - t0) / 1e6
    finally:
        await c.close()


async def c_create(addr, d, nfiles):
    c = await Client.connect(addr)
    try:
        await c.mkdir(d)
        data = b"x" * 1024
        t0 = time.perf_counter()
        for i in range(nfiles):
            fid = await c.walkpath(d)
            await c.create(fid, f"f{i:05d}", 0o644, OWRITE)
            await c.write(fid, 0, data)
            await c.clunk(fid)
        return nfiles / (time.perf_counter() - t0)
    finally:
        await c.close()


async def sync(addr):
    """Commit what the last workload left dirty, so that no forced sync lands in the next."""
    c = await Client.connect(addr, aname="main")
    try:
        await c.cons("sync", timeout=600)
    finally:
        await c.close()


async def c_stat(addr, d, nfiles):
    c = await Client.connect(addr)
    try:
        t0 = time.perf_counter()
        for i in range(nfiles):
            await c.stat_path(f"{d}/f{i:05d}")
        return nfiles / (time.perf_counter() - t0)
    finally:
        await c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB per sequential file (256)")
    ap.add_argument("--files", type=int, default=2000, help="files created (2000)")
    a = ap.parse_args()
    if not os.path.exists("/dev/fuse"):
        raise SystemExit("bench: no /dev/fuse here")
    nbytes = a.mib * MiB
    with tempfile.TemporaryDirectory(prefix="creepy-bench-mount-") as work:
        srv = start_creepy(work, None)
        addr = f"unix!{os.path.join(work, '9pix.sock')}"
        mnt = os.path.join(work, "mnt")
        mp = mount(addr, mnt)
        load0 = os.getloadavg()[0]
        rows = []
        try:
            print(f"bench: seq write {a.mib} MiB", file=sys.stderr)
            w_m = m_write(os.path.join(mnt, "w.mount"), nbytes)
            w_c = asyncio.run(c_write(addr, "w.client", nbytes))
            rows.append(("seq write", "MB/s", w_m, w_c))
            asyncio.run(sync(addr))
            print("bench: seq read", file=sys.stderr)
            r_m = m_read(os.path.join(mnt, "w.client"))
            r_c = asyncio.run(c_read(addr, "w.client"))
            rows.append(("seq read", "MB/s", r_m, r_c))
            asyncio.run(sync(addr))
            print(f"bench: create {a.files} files", file=sys.stderr)
            cr_m = m_create(os.path.join(mnt, "cm"), a.files)
            cr_c = asyncio.run(c_create(addr, "cc", a.files))
            rows.append(("create 1 KiB", "files/s", cr_m, cr_c))
            print("bench: stat", file=sys.stderr)
            st_m = m_stat(os.path.join(mnt, "cm"), a.files, 1.1)
            st_c = asyncio.run(c_stat(addr, "cc", a.files))
            rows.append(("stat by name", "calls/s", st_m, st_c))
        finally:
            mp.send_signal(signal.SIGTERM)
            mp.wait(60)
            srv.stop()
        load1 = os.getloadavg()[0]
    print(f"creepy mount vs the 9P client, one 9pix over a Unix socket "
          f"(load average {load0:.2f} before, {load1:.2f} after)")
    print(f"{'workload':<14} {'unit':<8} {'mount':>10} {'client':>10} {'mount/client':>13}")
    for name, unit, m, c in rows:
        print(f"{name:<14} {unit:<8} {m:>10,.0f} {c:>10,.0f} {m / c:>13.2f}")


if __name__ == "__main__":
    main()
