"""Mark and sweep: finding the free blocks of a main disk when the log has gone round.

Reachability.  A block is *live* if it is reachable from
  (a) the root entry of the newest committed superblock,
  (b) a file removed from the tree but still open (an orphan), through the frozen references
      of its in-memory tree, or
  (c) a pinned root (a commit that arch is reading),
following directory entries to their trees, NODE slots to their children, LEAF entries to the
files they name and PTR slots to their children.  DATA blocks are marked without being read.
Everything else in the log is garbage: old versions that no commit since has reached.

Why (a) is enough for the tree in memory: every frozen block the live tree points to was
loaded from, or written by, a commit, and the live tree is the newest commit plus melted
changes, so anything it reaches frozen is reached by the newest commit too, unless it was
removed from the namespace, which (b) covers (a removed file's later changes are frozen and
written by later commits too, reachable from no superblock, but from its orphan root).  A sweep
runs only when the committer is idle (commit.py): no freeze half done, no commit in flight or
failed, and the newest durable commit is the one recorded, which it checks at run time.

Sweep.  The marks (one bit per block) are written to the mark area that the newest superblock
does not name, and fsynced.  The log then begins a new lap: from its cursor once around the
disk, skipping marked blocks (log.py).  The superblock of the next commit names the new area.

Crash safety (DESIGN invariants 1 and 2).  Blocks handed out after a sweep are unmarked, so no
block reachable from the newest commit is ever overwritten: a crash before the next superblock
leaves that commit whole.  A crash before the next commit also leaves the newest superblock
naming the old mark area, untouched by this sweep, so the log resumes its old lap.  Garbage
made after a sweep waits for the next sweep; a block the sweep marked stays unused for the
whole lap even if it dies early.  Cost: the sweep reads every metadata block of the live
tree (not data blocks) on the writer thread; clients keep being served meanwhile.
"""

import time
from collections import namedtuple

from creepy.errors import CorruptBlock
from creepy.store.content import MPtr
from creepy.store.log import Log
from creepy.store.format import (DATA, DMDIR, E_ADDR, E_DEPTH, E_MODE, E_RERA, LEAF, MARK,
                                 NODE, PTRBLK, decode_block, decode_leaf, decode_node,
                                 decode_ptrs, encode_block, payload_capacity, ptrs_per_block)


class TreeReader:
    """Reads and verifies blocks straight from the disk, without the cache (thread-safe)."""

    def __init__(self, disk, bsize, max_era):
        self.disk = disk
        self.bsize = bsize
        self.fanout = ptrs_per_block(bsize)
        self.max_era = max_era
        self.reads = 0

    def raw(self, addr):
        self.reads += 1
        return self.disk.pread(addr * self.bsize, self.bsize)

    def block(self, addr, era, btype):
        _, _, payload = decode_block(self.raw(addr), addr, btype, want_era=era,
                                     max_era=self.max_era)
        return payload

    def children(self, addr, era, btype):
        """What a metadata block points to: [(addr, era, type, depth-or-entry)]."""
        payload = self.block(addr, era, btype)
        if btype == PTRBLK:
            return decode_ptrs(addr, payload, self.fanout)
        if btype == NODE:
            return [(k[1], k[2]) for k in decode_node(addr, payload)]
        return decode_leaf(addr, payload)


def entry_root(e):
    """(addr, era, type, depth) of an entry's tree, or None when it is empty."""
    if not e[E_ADDR]:
        return None
    depth = e[E_DEPTH]
    if e[E_MODE] & DMDIR:
        return (e[E_ADDR], e[E_RERA], LEAF if depth == 0 else NODE, depth)
    return (e[E_ADDR], e[E_RERA], DATA if depth == 0 else PTRBLK, depth)


def walk(reader, roots, visit, read_data=False, on_error=None):
    """Visit every block reachable from roots, parents first.

    roots: [(addr, era, type, depth)] or [((addr, era, type, depth), ctx)].  For each reference
    visit(addr, era, type, via, ctx) is called, via being "root", "entry" (the root of a file's
    or directory's tree) or "slot" (inside a tree), ctx the root's context extended by the
    names of the entries on the way (a path); it returns False to skip descending (a block
    already seen).  With read_data, DATA blocks are read and verified too.  A block that fails
    verification raises CorruptBlock, or with on_error is passed to on_error(exc, ctx) and
    its subtree skipped."""
    stack = []
    for r in roots:
        stack.append((r, "root", "") if len(r) == 4 else (r[0], "root", r[1]))
    while stack:
        (addr, era, btype, depth), via, ctx = stack.pop()
        if not visit(addr, era, btype, via, ctx):
            continue
        try:
            if btype == DATA:
                if read_data:
                    reader.block(addr, era, DATA)
                continue
            kids = reader.children(addr, era, btype)
        except CorruptBlock as e:
            if on_error is None:
                raise
            on_error(e, ctx)
            continue
        if btype == LEAF:
            for e in kids:
                r = entry_root(e)
                if r is not None:
                    stack.append((r, "entry", f"{ctx}/{e[0]}"))
        elif btype == NODE:
            for a, ea in kids:
                stack.append(((a, ea, LEAF if depth == 1 else NODE, depth - 1), "slot", ctx))
        else:
            for p in kids:
                if p is not None:
                    stack.append(((p[0], p[1], DATA if depth == 1 else PTRBLK, depth - 1),
                                  "slot", ctx))


def mark(reader, roots, nblocks):
    """A bitmap of the blocks reachable from roots, and how many there are."""
    bits = bytearray((nblocks + 7) // 8)
    count = 0

    def visit(addr, era, btype, via, ctx):
        nonlocal count
        if addr >= nblocks:
            raise CorruptBlock(addr, f"address past the end of the disk ({nblocks} blocks)")
        byte, bit = addr >> 3, 1 << (addr & 7)
        if bits[byte] & bit:
            return False
        bits[byte] |= bit
        count += 1
        return True

    walk(reader, roots, visit)
    return bits, count


def orphan_roots(store):
    """Frozen references held by removed-but-open files (run on the store's thread)."""
    roots = []
    for n in store.orphans:
        _collect(n.data.root, n.data.depth, roots)
    return roots


def _collect(ref, depth, out):
    if ref is None:
        return
    if type(ref) is tuple:
        out.append((ref[0], ref[1], DATA if depth == 0 else PTRBLK, depth))
    elif type(ref) is MPtr:
        for s in ref.slots:
            _collect(s, depth - 1, out)


def mark_area_addr(sb, area):
    return 2 + area * sb["marks"]


def write_marks(disk, sb, area, bits, era):
    """Write the bitmap into mark area `area` (blocks of type MARK), then fsync."""
    bsize = sb["bsize"]
    cap = payload_capacity(bsize)
    base = mark_area_addr(sb, area)
    for i in range(sb["marks"]):
        chunk = bytes(bits[i * cap:(i + 1) * cap])
        disk.pwrite((base + i) * bsize, encode_block(MARK, base + i, era, chunk, bsize))
    disk.fsync()


def open_log(disk, sb):
    """(Log, warning): the log as the superblock sb left it, with the marks of its last sweep.

    The marks are derived data: when their area is damaged the disk is still served, the log
    has nothing to hand out until the next sweep (which the first allocation starts) writes
    them again into the other area, and the warning (None otherwise) says so.  The store and
    check both build the log here, so check's free and garbage figures are the allocator's."""
    if not sb["sweep"]:
        return Log(sb, None), None
    try:
        return Log(sb, load_marks(disk, sb)), None
    except CorruptBlock as e:
        everything = bytearray(b"\xff") * ((sb["nblocks"] + 7) // 8)
        return Log(sb, everything), (f"mark area {sb['sweep'][0]} is damaged ({e}); nothing is "
                                     f"allocated until the next sweep writes it again")


def load_marks(disk, sb):
    """The bitmap the superblock's last sweep left (verified), as a bytearray."""
    area, _, era = sb["sweep"]
    bsize = sb["bsize"]
    base = mark_area_addr(sb, area)
    bits = bytearray()
    for i in range(sb["marks"]):
        raw = disk.pread((base + i) * bsize, bsize)
        _, _, payload = decode_block(raw, base + i, MARK, want_era=era)
        bits += payload
    need = (sb["nblocks"] + 7) // 8
    if len(bits) < need:
        raise CorruptBlock(base, "mark area shorter than the disk")
    return bits[:need]


SweepResult = namedtuple("SweepResult", "area bits live secs reads")


def sweep(disk, sb, roots, era):
    """Mark from the commit sb, and from roots (orphans and pins); write the marks, with era
    `era`, into the mark area sb does not name.

    Runs the disk work on the calling thread (the committer's writer thread) and returns a
    SweepResult (area, bits, live blocks, seconds, blocks read); the committer starts the new
    lap with it on the loop."""
    t0 = time.perf_counter()
    reader = TreeReader(disk, sb["bsize"], sb["era"])
    roots = list(roots)
    r = entry_root(sb["root"])
    if r is not None:
        roots.append(r)
    bits, live = mark(reader, roots, sb["nblocks"])
    cur = sb["sweep"]
    area = 1 - cur[0] if cur else 0
    write_marks(disk, sb, area, bits, era)
    return SweepResult(area, bits, live, time.perf_counter() - t0, reader.reads)
