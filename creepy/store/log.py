"""The log: where new blocks go, and the order in which a commit reaches the disk.

Allocation.  The log is the disk past the superblocks and mark areas.  Blocks are handed out in
address order from a cursor.  The log is a circle: after a sweep (see sweep.py) the cursor goes
once around the disk, from where the sweep left it back to the same place, skipping every block
the sweep marked live.  `left` counts the blocks of that lap not yet passed, `avail` the unmarked
ones among them: when avail reaches zero the next sweep must run.  A fresh disk has no marks and
its lap runs from the start of the log to the end of the disk.  On a WORM disk there is never a
sweep: the cursor only moves forward and the disk is full when it reaches the end.

Commit order (DESIGN invariant 1), in write_commit:
  1. every block of the commit, at addresses that no committed tree reaches;
  2. fsync;
  3. the superblock, into the copy the previous commit did not use (era % 2);
  4. fsync.
A crash before 4 leaves the previous superblock in place, naming a tree none of whose blocks
was touched; a torn superblock fails its checksum and the other copy is used.
"""

from creepy.errors import DiskFull
from creepy.store.format import encode_block_parts


class Log:
    def __init__(self, sb, marks=None):
        self.kind = sb["kind"]
        self.nblocks = sb["nblocks"]
        self.nmarks = sb["marks"]
        self.start = 2 + 2 * self.nmarks
        self.cursor, self.left = sb["cursor"]
        self.marks = marks          # bytearray bitmap of the last sweep, or None
        self.sweep = sb["sweep"]    # [area, free] of the last sweep, or None
        self.avail = self._count_avail()

    def _count_avail(self):
        if self.marks is None:
            return self.left
        n, c, total = self.left, self.cursor, 0
        while n > 0:
            run = min(n, self.nblocks - c)
            total += run - _popcount(self.marks, c, c + run)
            n -= run
            c = self.start if c + run >= self.nblocks else c + run
        return total

    def alloc(self):
        """The next free address, moving the cursor past it."""
        marks = self.marks
        while self.left > 0:
            a = self.cursor
            self.left -= 1
            self.cursor = a + 1 if a + 1 < self.nblocks else self.start
            if marks is None or not (marks[a >> 3] >> (a & 7)) & 1:
                self.avail -= 1
                return a
        raise DiskFull()

    def new_lap(self, area, bits, era):
        """A sweep marked `bits` (written to mark area `area` with era `era`): go round once
        more from the cursor, skipping what is marked."""
        self.marks = bits
        self.left = self.nblocks - self.start
        self.avail = self._count_avail()
        self.sweep = [area, self.avail, era]

    def state(self):
        return [self.cursor, self.left]

    def used(self):
        """Blocks in use as far as the log knows: everything not available to allocate."""
        return self.nblocks - self.start - self.avail


def _popcount(bitmap, lo, hi):
    """Set bits of bitmap for block numbers in [lo, hi)."""
    if lo >= hi:
        return 0
    total = 0
    while lo < hi and lo & 7:
        total += (bitmap[lo >> 3] >> (lo & 7)) & 1
        lo += 1
    while hi > lo and hi & 7:
        hi -= 1
        total += (bitmap[hi >> 3] >> (hi & 7)) & 1
    if lo < hi:
        total += int.from_bytes(bitmap[lo >> 3:hi >> 3], "little").bit_count()
    return total


def write_commit(disk, bsize, era, blocks, super_block, slot):
    """Write a commit in the order the module docstring gives.

    blocks: [(addr, type, payload)], frozen: their headers and checksums are computed here,
    on the writer thread, to keep the freeze on the event loop short.  super_block: the
    encoded superblock for copy `slot`.  Runs of consecutive addresses go to the disk in one
    pwritev each."""
    blocks.sort(key=lambda b: b[0])
    i = 0
    while i < len(blocks):
        j = i + 1
        while j < len(blocks) and blocks[j][0] == blocks[j - 1][0] + 1:
            j += 1
        bufs = []
        for addr, btype, payload in blocks[i:j]:
            bufs.extend(encode_block_parts(btype, addr, era, payload, bsize))
        disk.pwritev(blocks[i][0] * bsize, bufs)
        i = j
    disk.fsync()
    disk.pwrite(slot * bsize, super_block)
    disk.fsync()
