"""Blocks: reading frozen blocks through a bounded cache, verifying every one (DESIGN invariant 4).

A frozen block is found, in this order, among the blocks of commits not yet written (`pending`:
frozen, readable, never evicted), in the cache of clean blocks, or on the disk, where it is read
and verified against the (address, era) of the pointer that names it.  This module knows blocks
and their decoded forms, never trees or nodes: content.py and dirtree.py ask it for the blocks
their references name.  It never writes (the committer does, commit.py).
"""

import asyncio
import concurrent.futures

from creepy.errors import CorruptBlock
from creepy.store.cache import BlockCache
from creepy.store.format import (DATA, LEAF, NODE, PTRBLK, decode_block, decode_leaf,
                                 decode_node, decode_ptrs, payload_capacity, ptrs_per_block)


class Blocks:
    """The frozen blocks of one disk, as decoded objects.

    DATA blocks decode to their payload (bytes or a memoryview), PTR blocks to a PtrBlock,
    LEAF blocks to (names, entries) and NODE blocks to (firsts, [(addr, era)]).  Every method
    runs on the caller's thread (the event loop) except the read-ahead's disk reads."""

    def __init__(self, disk, bsize, cache_bytes):
        self.disk = disk
        self.bsize = bsize
        self.cap = payload_capacity(bsize)
        self.fanout = ptrs_per_block(bsize)
        self.cache = BlockCache(cache_bytes)
        self.pending = {}                   # addr -> decoded block, frozen but not yet written
        self.readers = None                 # read-ahead thread, started on first use
        self.reading = set()                # addresses being read ahead
        self.stats = {"blocks_read": 0, "corrupt": 0}

    def close(self):
        if self.readers is not None:
            self.readers.shutdown(wait=True)

    def _load(self, ref, btype, decode):
        addr, era = ref
        obj = self.pending.get(addr)
        if obj is not None:
            return obj
        obj = self.cache.get(addr, era)
        if obj is not None:
            return obj
        raw = self.disk.pread(addr * self.bsize, self.bsize)
        self.stats["blocks_read"] += 1
        try:
            _, _, payload = decode_block(raw, addr, btype, want_era=era)
            obj = decode(addr, payload)
        except CorruptBlock:
            self.stats["corrupt"] += 1
            raise
        self.cache.put(addr, era, obj, self.mem_size(btype, obj))
        return obj

    def mem_size(self, btype, obj):
        """What a decoded block costs in memory, roughly: a leaf's entries are Python lists."""
        if btype == LEAF:
            return self.bsize + 480 * len(obj[0])
        if btype == NODE:
            return self.bsize + 160 * len(obj[0])
        return self.bsize + 64

    def load_data(self, ref):
        return self._load(ref, DATA, _decode_data)

    def load_ptrs(self, ref):
        return self._load(ref, PTRBLK, self._decode_ptrs)

    def load_leaf(self, ref):
        return self._load(ref, LEAF, _decode_leaf)

    def load_node(self, ref):
        return self._load(ref, NODE, _decode_node)

    def _decode_ptrs(self, addr, payload):
        return decode_ptrs(addr, payload, self.fanout)

    def load_data_many(self, refs):
        """{addr: payload} of the DATA blocks of refs that are not in memory, read a run of
        consecutive addresses at a time (a file written in one go is one run).  They are not
        cached: a large read passes through, and the kernel caches the disk file anyway; keeping
        them would grow the heap, and new memory is slow (page faults).  Blocks that fail
        verification are left out, for load_data to report."""
        missing = [r for r in refs if r[0] not in self.pending and not self.cache.has(*r)]
        if len(missing) < 2:
            return {}
        missing.sort()
        got = {}
        for run in runs(missing):
            raw = self.disk.pread(run[0][0] * self.bsize, len(run) * self.bsize)
            got.update(self._verify_run(run, raw))
        return got

    def _verify_run(self, run, raw):
        """[(addr, payload view)] of the blocks of run that verify, from raw (run's blocks)."""
        bs = self.bsize
        mv = memoryview(raw)
        out = []
        for i, (addr, era) in enumerate(run):
            try:
                _, _, payload = decode_block(mv[i * bs:(i + 1) * bs], addr, DATA, want_era=era,
                                             copy=False)
            except CorruptBlock:
                continue
            self.stats["blocks_read"] += 1
            out.append((addr, payload))
        return out

    def read_ahead(self, refs):
        """Start reading the DATA blocks refs [(addr, era)] that are not in memory, on a reader
        thread; they are verified and cached on the event loop when they arrive."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        want = [r for r in refs if r[0] not in self.reading and r[0] not in self.pending
                and not self.cache.has(r[0], r[1])]
        if not want:
            return
        if self.readers is None:
            self.readers = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="creepy-reader")
        for r in want:
            self.reading.add(r[0])
        fut = loop.run_in_executor(self.readers, self._read_raw, want)
        fut.add_done_callback(lambda f: self._read_ahead_done(want, f))

    def _read_raw(self, refs):
        return [(run, self.disk.pread(run[0][0] * self.bsize, len(run) * self.bsize))
                for run in runs(sorted(refs))]

    def _read_ahead_done(self, refs, fut):
        for r in refs:
            self.reading.discard(r[0])
        if fut.cancelled() or fut.exception() is not None:
            return
        for run, raw in fut.result():       # verified here; a read that needs a bad block
            eras = dict(run)                # reports it then
            for addr, payload in self._verify_run(run, raw):
                # A copy: a view would keep the whole run's buffer (up to 4 MiB) in memory
                # for as long as any one of its blocks stays in the cache.
                self.cache.put(addr, eras[addr], bytes(payload), self.bsize + 64)


def runs(refs):
    """Sorted (addr, era) refs split into runs of consecutive addresses (at most 4 MiB)."""
    out, cur = [], []
    for r in refs:
        if cur and (r[0] != cur[-1][0] + 1 or len(cur) >= 256):
            out.append(cur)
            cur = []
        cur.append(r)
    if cur:
        out.append(cur)
    return out


def _decode_data(addr, payload):
    return payload


def _decode_leaf(addr, payload):
    ents = decode_leaf(addr, payload)
    return (tuple([e[0] for e in ents]), ents)


def _decode_node(addr, payload):
    kids = decode_node(addr, payload)
    return ([k[0] for k in kids], [(k[1], k[2]) for k in kids])
