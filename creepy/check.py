"""creepy check: verify a disk, main or WORM, without writing to it.

    creepy check [-v] disk

It reads the newest valid superblock and walks the tree it commits: every block is read and
verified (magic, type, own address, birth era against the pointer that names it, checksum),
every pointer must name a block inside the log, and no block may be reached twice inside one
file's or directory's own tree (sharing between files, as link and copy on write make, is
fine).  It also checks the log's bookkeeping: no reachable block may lie where the allocator
would hand it out again.  It reports garbage (blocks the log has used that no longer hold
anything reachable; the next sweep reclaims them), prints a summary, shows progress on long
runs, and exits 1 if anything is corrupt or a commit may have been lost (a damaged superblock
copy claiming a newer era, a damaged root that made it fall back to the older copy: it checks
the commit a server would serve, chosen by the same code), 0 if not.  A damaged mark area is
only a warning: the marks are derived data, and the next sweep writes them again.  The free
and garbage figures come from the allocator's own view of the log (sweep.open_log).

The disk may be in use by a server: check opens it read-only, and if the server committed
while the check ran it says so and checks again once against the newer commit.
"""

import argparse
import sys
import time

from creepy.errors import CorruptBlock, DiskDamaged, NotCreepy
from creepy.store.disk import Disk
from creepy.store.format import DATA, DMDIR, E_ADDR, E_MODE, LEAF, NODE, read_super_pair
from creepy.store.store import choose_commit
from creepy.store.sweep import TreeReader, entry_root, open_log, walk


class Report:
    def __init__(self):
        self.errors = []          # (addr, message, path)
        self.blocks = 0
        self.data = 0
        self.meta = 0
        self.files = 0
        self.dirs = 0
        self.shared = 0
        self.garbage = 0
        self.free = 0
        self.bytes = 0
        self.era = None
        self.warnings = []
        self.damaged = []         # superblock copies or a root found bad: a commit may be lost

    def error(self, addr, msg, path=""):
        self.errors.append((addr, msg, path))


def check_disk(path, verbose=False, progress=None):
    """Check the disk at path; returns a Report."""
    disk = Disk(path, readonly=True)
    try:
        rep = _check(disk, verbose, progress)
        # A server may have committed meanwhile: if the disk moved on and we found errors,
        # they may be blocks the server reused; check once more against the newer commit.
        sb, _ = read_super_pair(disk.pread)
        if rep.errors and sb["era"] > rep.era:
            first = rep.era
            rep = _check(disk, verbose, progress)
            rep.warnings.append(f"the disk was committed during the check (era {first} -> "
                                f"{rep.era}): checked again")
        return rep
    finally:
        disk.close()


def _check(disk, verbose, progress):
    rep = Report()
    sb, rep.damaged, found = choose_commit(disk)   # the commit a server would serve, and why
    rep.warnings.extend(found)
    rep.era = sb["era"]
    bsize = sb["bsize"]
    log, marks_damaged = open_log(disk, sb)   # the allocator's own view of the log
    if marks_damaged:
        rep.warnings.append(marks_damaged)
    reader = TreeReader(disk, bsize, sb["era"])
    nblocks = sb["nblocks"]
    seen = bytearray((nblocks + 7) // 8)
    t_last = [time.monotonic()]
    cur = [None, set()]          # the tree being walked and the blocks seen in it

    def visit(addr, era, btype, via, ctx):
        if not log.start <= addr < nblocks:
            rep.error(addr, f"pointer outside the log ({log.start}..{nblocks - 1})", ctx)
            return False
        # Blocks reached twice are shared (link, and copy on write after it, share trees and
        # blocks between files); inside one file's or directory's own tree a block reached
        # twice is corruption.  The walk is depth first, so one tree's blocks come together.
        if ctx != cur[0]:
            cur[0] = ctx
            cur[1] = set()
        if via == "slot" and addr in cur[1]:
            rep.error(addr, "block referenced twice in one tree", ctx)
            return False
        cur[1].add(addr)
        byte, bit = addr >> 3, 1 << (addr & 7)
        if seen[byte] & bit:
            rep.shared += 1
            return False
        seen[byte] |= bit
        rep.blocks += 1
        if btype == DATA:
            rep.data += 1
        else:
            rep.meta += 1
        if progress and rep.blocks % 4096 == 0 and time.monotonic() - t_last[0] > 2:
            t_last[0] = time.monotonic()
            progress(f"checked {rep.blocks} blocks ({rep.blocks * bsize >> 20} MiB)")
        return True

    def on_error(e, ctx):
        rep.error(e.addr, e.why, ctx)

    root = entry_root(sb["root"])
    roots = [(root, "")] if root else []
    walk(reader, roots, visit, read_data=True, on_error=on_error)
    _count_files(disk, sb, rep)
    rep.bytes = rep.blocks * bsize
    # The allocator must never hand out a reachable block: every reachable block is either
    # behind the cursor in this lap, or marked by the last sweep.
    ahead = _unpassed(log)
    for addr in _bits(seen, nblocks):
        marked = log.marks is not None and (log.marks[addr >> 3] >> (addr & 7)) & 1
        if ahead(addr) and not marked:
            rep.error(addr, "reachable block lies where the log will allocate next")
    rep.free = log.avail
    rep.garbage = max(0, log.used() - rep.blocks)
    return rep


def _count_files(disk, sb, rep):
    """Files and directories in the commit (a second, metadata-only walk)."""
    reader = TreeReader(disk, sb["bsize"], sb["era"])
    rep.dirs = 1
    stack = [entry_root(sb["root"])] if sb["root"][E_ADDR] else []
    while stack:
        addr, era, btype, depth = stack.pop()
        try:
            kids = reader.children(addr, era, btype)
        except CorruptBlock:
            continue
        if btype == LEAF:
            for e in kids:
                if e[E_MODE] & DMDIR:
                    rep.dirs += 1
                    r = entry_root(e)
                    if r:
                        stack.append(r)
                else:
                    rep.files += 1
        elif btype == NODE:
            for a, ea in kids:
                stack.append((a, ea, LEAF if depth == 1 else NODE, depth - 1))


def _unpassed(log):
    """A predicate: is addr in the part of the lap the cursor has not reached yet?"""
    c, left, start, n = log.cursor, log.left, log.start, log.nblocks
    end1 = min(n, c + left)
    rest = left - (end1 - c)

    def ahead(addr):
        return c <= addr < end1 or start <= addr < start + rest
    return ahead


def _bits(bitmap, n):
    for i, b in enumerate(bitmap):
        if b:
            for k in range(8):
                if b >> k & 1:
                    yield i * 8 + k


def main(argv=None):
    ap = argparse.ArgumentParser(prog="creepy check", description="verify a creepy disk")
    ap.add_argument("-v", action="store_true", help="list every error and warning in full")
    ap.add_argument("disk")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()

    def progress(msg):
        print(f"creepy check: {msg}", file=sys.stderr, flush=True)

    try:
        rep = check_disk(a.disk, a.v, progress)
    except (OSError, NotCreepy, DiskDamaged, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        print(f"creepy check: {a.disk}: {why}", file=sys.stderr)
        return 2
    secs = time.perf_counter() - t0
    for w in rep.damaged:
        print(f"damaged: {w}")
    for w in rep.warnings:
        print(f"warning: {w}")
    shown = rep.errors if a.v else rep.errors[:50]
    for addr, msg, path in shown:
        print(f"corrupt block {addr}: {msg}" + (f" (in {path or '/'})" if path else ""))
    if len(shown) < len(rep.errors):
        print(f"... and {len(rep.errors) - len(shown)} more (use -v)")
    print(f"era {rep.era}: {rep.files} files, {rep.dirs} directories, {rep.blocks} blocks "
          f"reachable ({rep.data} data, {rep.meta} metadata, {rep.shared} shared), "
          f"{rep.garbage} garbage, {rep.free} free; {len(rep.errors)} errors; "
          f"{rep.bytes / secs / 1e6 if secs else 0:.0f} MB/s")
    return 1 if rep.errors or rep.damaged else 0
