"""The store: a mutable tree of nodes in memory over a log of frozen blocks on disk.

It offers the file tree's structural operations (lookup, create, remove, rename, read, write,
truncate) with no notion of users, permissions or protocols, and it syncs: freeze, write, commit.

Sync (DESIGN invariants 1, 3, 5):
  freeze   on the caller's thread (the event loop), quickly: every melted block below a dirty
           node gets an address from the log and is encoded; the tree holds only frozen
           references afterwards, and the encoded blocks wait in `pending` (readable, not
           evictable) until written.  The next era begins: later changes melt new copies.
  write    on the writer thread: blocks, fsync, superblock, fsync (log.write_commit).
  finish   back on the caller's thread: pending blocks become clean cache entries.
One commit is in flight at a time.  A commit whose write failed is retried, whole, before any
later one, because the tree in memory already points at its blocks.

Opening a disk reads the newest valid superblock and nothing else: nodes and blocks load when
first used, so start-up does not grow with the tree.
"""

import asyncio
import concurrent.futures
import time

from creepy.errors import CorruptBlock, DiskFull, FsError
from creepy.store import content, dirtree
from creepy.store import sweep as sweepmod
from creepy.store.cache import BlockCache
from creepy.store.format import (DATA, DMDIR, LEAF, NODE, PTRBLK, QSPACE_DERIVED, SUPER,
                                 FORMAT_VERSION,
                                 check_bsize, decode_block, decode_leaf, decode_node,
                                 decode_ptrs, encode_block, encode_super, now_ns,
                                 payload_capacity, ptrs_per_block, read_super_pair)
from creepy.store.log import Log, write_commit
from creepy.store.node import Node

DEFAULT_CACHE = 256 << 20
NODE_COST = 1024
ROOT_PATH = 1


class Commit:
    __slots__ = ("era", "blocks", "sb", "slot", "super_block", "freeze_s", "write_s")

    def __init__(self, era, blocks, sb, super_block):
        self.era = era
        self.blocks = blocks
        self.sb = sb
        self.slot = era % 2
        self.super_block = super_block
        self.freeze_s = self.write_s = 0.0


class Freezer:
    """Hands out addresses and collects the encoded blocks of one commit."""

    def __init__(self, store):
        self.store = store
        self.era = store.era
        self.blocks = []

    def put(self, btype, payload, obj):
        st = self.store
        addr = st.log.alloc()
        self.blocks.append((addr, btype, payload))     # encoded on the writer thread
        st.pending[addr] = obj
        return (addr, self.era)


class Store:
    def __init__(self, disk, sb, cache_bytes=DEFAULT_CACHE, readonly=False, node_bytes=None):
        self.disk = disk
        self.bsize = sb["bsize"]
        self.cap = payload_capacity(self.bsize)
        self.fanout = ptrs_per_block(self.bsize)
        self.max_blocks = self.fanout ** 4
        self.kind = sb["kind"]
        self.owner = sb["owner"]
        self.readonly = readonly
        self.committed = sb
        self.era = sb["era"] + 1            # the era being built in memory
        self.nextpath = sb["nextpath"]
        self.nextspace = sb.get("nextspace", 1)   # the qid space the next link opens
        self.log = Log(sb, self._load_marks(sb))
        self.cache = BlockCache(cache_bytes)
        self.pending = {}                   # addr -> decoded block, frozen but not yet written
        self.nmelted = 0                    # blocks melted since the last freeze
        self.nmelted_dir = 0                # of which directory blocks (may split at freeze)
        self.settled = False                # nmelted is exact (see settle)
        self.root = Node.from_entry(sb["root"], None)
        self.failed = None                  # a commit whose write failed, to retry first
        self.orphans = set()                # removed files still open: the sweep keeps them
        self.pins = {}                      # name -> [root]: commits the sweep must keep
        # Blocks kept back for the commits of removes once the disk is full.
        self.reserve = 0 if self.kind == "worm" else max(8, (self.log.nblocks - self.log.start) // 64)
        self.swept_era = -1                 # committed era when the last sweep ran
        # Loaded nodes beyond the root; past max_live, clean unheld ones are dropped.
        self.nlive = 0
        # A loaded node costs about NODE_COST bytes with its dictionaries.
        self.max_live = max(1024, (node_bytes or cache_bytes // 5) // NODE_COST)
        self._trim_at = self.max_live
        self.readers = None                 # read-ahead thread, started on first use
        self.reading = set()                # addresses being read ahead
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="creepy-writer")
        self._sync_lock = None
        self.stats = {"syncs": 0, "sync_s": 0.0, "last_sync_s": 0.0, "freeze_s": 0.0,
                      "blocks_written": 0, "bytes_written": 0, "blocks_read": 0,
                      "corrupt": 0, "sync_errors": 0, "sweeps": 0, "sweep_s": 0.0,
                      "last_sweep_s": 0.0, "swept_live": 0}

    # --- opening and formatting ------------------------------------------------------------

    @classmethod
    def open(cls, disk, cache_bytes=DEFAULT_CACHE, readonly=False, node_bytes=None):
        sb, _ = read_super_pair(disk.pread)
        if sb["nblocks"] * sb["bsize"] > disk.size:
            raise CorruptBlock(0, f"superblock says {sb['nblocks']} blocks of {sb['bsize']} "
                                  f"bytes; the disk has only {disk.size} bytes")
        return cls(disk, sb, cache_bytes, readonly, node_bytes)

    @staticmethod
    def format(disk, kind="main", owner="none", bsize=16384, group="adm", stamp=None):
        """Write an empty tree: superblock copies of eras 0 and 1 naming an empty /root."""
        check_bsize(bsize)
        nblocks = disk.size // bsize
        cap = payload_capacity(bsize)
        marks = 0 if kind == "worm" else -(-nblocks // (cap * 8))
        start = 2 + 2 * marks
        if nblocks - start < 16:
            raise ValueError(f"a disk of {disk.size} bytes is too small for {bsize}-byte blocks")
        t = stamp if stamp is not None else now_ns()
        root = ["", ROOT_PATH, DMDIR | 0o775, owner, group, owner, t, t, 0, 0, 0, 0, 0, 0]
        sb = {"version": FORMAT_VERSION, "kind": kind, "bsize": bsize, "nblocks": nblocks,
              "marks": marks, "era": 0, "root": root, "nextpath": ROOT_PATH + 1,
              "cursor": [start, nblocks - start], "sweep": None, "owner": owner, "stamp": t}
        for era in (0, 1):
            sb["era"] = era
            disk.pwrite(era * bsize, encode_block(SUPER, era, era, encode_super(sb), bsize))
        disk.fsync()
        return dict(sb)

    def _load_marks(self, sb):
        return sweepmod.load_marks(self.disk, sb) if sb["sweep"] else None

    def close(self):
        self.writer.shutdown(wait=True)
        if self.readers is not None:
            self.readers.shutdown(wait=True)

    # --- loading frozen blocks -------------------------------------------------------------

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
        for run in _runs(missing):
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

    def load_ptrs(self, ref):
        return self._load(ref, PTRBLK, self._decode_ptrs)

    def load_leaf(self, ref):
        return self._load(ref, LEAF, _decode_leaf)

    def load_node(self, ref):
        return self._load(ref, NODE, _decode_node)

    def _decode_ptrs(self, addr, payload):
        return decode_ptrs(addr, payload, self.fanout)

    def note_melt(self):
        self.nmelted += 1

    def note_melt_dir(self):
        self.nmelted += 1
        self.nmelted_dir += 1
        self.settled = False

    # --- the tree --------------------------------------------------------------------------

    def lookup(self, d, name):
        n = d.live.get(name)
        if n is not None:
            return n
        e = dirtree.get(self, d.dir, name)
        if e is None:
            return None
        n = Node.from_entry(e, d)
        d.live[name] = n
        self.nlive += 1
        if self.nlive > self._trim_at:
            self.trim_nodes()
        return n

    def trim_nodes(self):
        """Drop loaded nodes that nothing needs: clean (their entry on disk is current), held
        by no fid, open nowhere, with no loaded children.  Walks the loaded tree once, children
        before parents, until a quarter of max_live is freed."""
        target = self.max_live * 3 // 4
        stack = [(self.root, iter(list(self.root.live.values())))]
        while stack and self.nlive > target:
            d, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                if stack and _evictable(d):
                    self._evict(stack[-1][0], d)
                continue
            if child.live:
                stack.append((child, iter(list(child.live.values()))))
            elif _evictable(child):
                self._evict(d, child)
        # if most nodes are held or dirty, wait for twice as many before walking again
        self._trim_at = max(self.max_live, self.nlive * 2 if self.nlive > target else 0)

    def dirents(self, d, after=None):
        """(name, entry) of d in name order after `after`; loaded children give their current
        metadata."""
        live = d.live
        for name, e in dirtree.items(self, d.dir, after):
            n = live.get(name)
            yield name, (n.entry() if n is not None else e)

    def changed(self, n):
        """n's entry must be written again: mark it and its ancestors dirty in this era."""
        era = self.era
        self.settled = False
        n.vers = (n.vers + 1) & 0xFFFFFFFF
        n.era = era
        n.dirty = True
        c, p = n, n.parent
        while p is not None:
            if p.dirty and c.name in p.dirtykids:
                break
            p.dirtykids.add(c.name)
            p.era = era
            p.dirty = True
            c, p = p, p.parent

    def _evict(self, d, n):
        if d.live.get(n.name) is n:
            del d.live[n.name]
            n.parent = None
            self.nlive -= 1

    def create(self, d, name, mode, uid, gid, now):
        if self.readonly:
            raise FsError("read only file system")
        path = self.nextpath
        self.nextpath += 1
        n = Node(name, path, mode, uid, gid, uid, now, now, 0, 0, self.era, parent=d)
        self.nlive += 1
        self._enter(d, n, uid, now)
        return n

    def _enter(self, d, n, muid, now):
        """Make n the entry n.name of directory d, which muid changes at now."""
        d.live[n.name] = n
        dirtree.put(self, d.dir, n.name, n.entry())
        d.mtime = now
        d.muid = muid
        self.changed(d)
        self.changed(n)

    def link(self, src, d, name, muid, now):
        """Make `name` in directory d a new name for the frozen tree of src (creepy(4) link).

        src must be clean (its tree and everything below it frozen): the caller syncs first.
        Nothing is copied: both entries point at the same blocks, and a change under either
        melts copies of what it touches (DESIGN invariant 8), so src never changes.  The new
        top gets a fresh qid.path and opens a qid space of its own, in which the files it
        shares with src are shown (format.py: entry field qspace), so that no two live files
        share a qid.path."""
        if src.dirty or not src.tree().frozen():
            raise FsError("link source has changes not yet synced")
        if self.nextspace >= QSPACE_DERIVED:
            raise FsError("no qid space left for another link")
        e = src.entry()
        e[0] = name
        n = Node.from_entry(e, d)
        n.path = self.nextpath
        self.nextpath += 1
        n.qspace = self.nextspace
        self.nextspace += 1
        n.place(d)
        self.nlive += 1
        self._enter(d, n, muid, now)
        return n

    def unlink(self, n, muid, now):
        """Take n out of its directory (the caller checked it may go)."""
        d = n.parent
        dirtree.delete(self, d.dir, n.name)
        d.live.pop(n.name, None)
        d.dirtykids.discard(n.name)
        n.parent = None
        n.removed = True
        self.nlive -= 1
        if n.refs > 0 and not n.isdir:
            self.orphans.add(n)
        d.mtime = now
        d.muid = muid
        self.changed(d)

    def rename(self, n, newname, muid, now, d=None):
        """Rename n to newname in directory d (by default its own), replacing any file of that
        name (the caller checked that is allowed): the name changes atomically for every
        observer."""
        src = n.parent
        if d is None:
            d = src
        old = self.lookup(d, newname)
        if old is not None and old is not n:
            self.unlink(old, muid, now)
        dirtree.delete(self, src.dir, n.name)
        src.live.pop(n.name, None)
        src.dirtykids.discard(n.name)
        if d is not src:
            src.mtime = now
            src.muid = muid
            self.changed(src)
            n.parent = d
            n.place(d)              # the caller checked its qid.path stays what it was
        n.name = newname
        self._enter(d, n, muid, now)

    def read(self, n, off, count):
        return content.read(self, n.data, off, count, n.length)

    def read_ahead(self, n, off, nbytes):
        """Start reading the DATA blocks of n's [off, off+nbytes) that are not in memory, on a
        reader thread; they are verified and cached on the event loop when they arrive."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        want = [r for r in content.block_refs(self, n.data, off, nbytes, n.length)
                if r[0] not in self.reading and r[0] not in self.pending
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
        runs = _runs(sorted(refs))
        return [(run, self.disk.pread(run[0][0] * self.bsize, len(run) * self.bsize))
                for run in runs]

    def _read_ahead_done(self, refs, fut):
        for r in refs:
            self.reading.discard(r[0])
        if fut.cancelled() or fut.exception() is not None:
            return
        for run, raw in fut.result():       # verified here; a read that needs a bad block
            eras = dict(run)                # reports it then
            for addr, payload in self._verify_run(run, raw):
                self.cache.put(addr, eras[addr], payload, self.bsize + 64)

    def write(self, n, off, data):
        """Write data at off and grow the length; the caller sets mtime/muid and calls changed."""
        content.write(self, n.data, off, data)
        end = off + len(data)
        if end > n.length:
            n.length = end

    def truncate(self, n, length):
        content.truncate(self, n.data, length, n.length)
        n.length = length

    def isempty(self, d):
        return d.dir.empty()

    # --- sync ------------------------------------------------------------------------------

    @property
    def dirty(self):
        return self.root.dirty or self.failed is not None

    def dirty_bytes(self):
        return self.nmelted * self.bsize

    def need_blocks(self):
        """An upper bound on the blocks the next freeze allocates.  Quick: every melted block,
        twice for directory blocks (a leaf may split when its entries are updated at freeze),
        and a little for new root levels.  Exact after settle(): the melted blocks."""
        if self.settled:
            return self.nmelted
        return self.nmelted + self.nmelted_dir + 16

    def short(self, use_reserve=False, more=0):
        """Too few free blocks for the next freeze plus `more` blocks (keeping the reserve for
        removes unless use_reserve).  When the quick bound says short, settle and count what
        the freeze would really write."""
        limit = self.log.avail - more - (0 if use_reserve else self.reserve)
        if self.need_blocks() <= limit:
            return False
        if not self.settled:
            self.settle()
        return self.need_blocks() > limit

    def settle(self):
        """Put every dirty node's entry into its directory now, so that the splits a freeze
        would make happen here, then count the melted blocks reachable from the dirty tree.
        Afterwards the count is exactly what a freeze writes: entry sizes are estimated from
        their strings only (dirtree.entry_est), so the entries freeze puts with real addresses
        split nothing more, and freeze encodes every estimated-to-fit block into one block."""
        data = dirs = 0
        stack = [self.root] if self.root.dirty else []
        while stack:
            n = stack.pop()
            if n.dir is not None:
                live = n.live
                for name in sorted(n.dirtykids):
                    kid = live[name]
                    dirtree.put(self, n.dir, name, kid.entry())
                    stack.append(kid)
                dirs += dirtree.melted(n.dir)
            else:
                data += content.melted(n.data)
        self.nmelted, self.nmelted_dir = data + dirs, dirs
        self.settled = True

    def sweep_useful(self):
        """A sweep can only find garbage that a commit made since the last sweep."""
        return self.kind == "main" and self.committed_era != self.swept_era

    def freeze(self):
        """Freeze the dirty tree into a Commit (None when nothing changed).  The caller checked
        there is room (short/sweep); running out of blocks here would leave the tree half
        frozen, so it is refused up front."""
        if not self.root.dirty:
            return None
        if self.log.avail < self.need_blocks():
            raise DiskFull()
        t0 = time.perf_counter()
        fz = Freezer(self)
        root_entry = self._freeze_node(self.root, fz)
        sb = dict(self.committed)
        sb.update(era=self.era, root=root_entry, nextpath=self.nextpath, nextspace=self.nextspace,
                  cursor=self.log.state(), sweep=self.log.sweep, stamp=now_ns())
        commit = Commit(self.era, fz.blocks, sb,
                        encode_block(SUPER, self.era % 2, self.era, encode_super(sb), self.bsize))
        self.era += 1
        self.nmelted = self.nmelted_dir = 0
        self.settled = False
        commit.freeze_s = time.perf_counter() - t0
        self.stats["freeze_s"] += commit.freeze_s
        return commit

    # --- sweep (see sweep.py) ----------------------------------------------------------------

    def sweep_roots(self):
        roots = sweepmod.orphan_roots(self)
        for rs in self.pins.values():
            roots.extend(rs)
        return roots

    def start_lap(self, result):
        """Apply a finished sweep: the log goes round again, skipping the marked blocks."""
        area, bits, live, secs, reads = result
        lg = self.log
        lg.marks = bits
        lg.left = lg.nblocks - lg.start
        lg.avail = lg._count_avail()
        lg.sweep = [area, lg.avail, self.era]
        self.swept_era = self.committed_era
        st = self.stats
        st["sweeps"] += 1
        st["sweep_s"] += secs
        st["last_sweep_s"] = secs
        st["swept_live"] = live
        for n in [n for n in self.orphans if n.refs <= 0]:
            self.orphans.discard(n)

    def sweep_now(self):
        self.start_lap(sweepmod.sweep(self, self.sweep_roots()))

    async def sweep(self):
        loop = asyncio.get_running_loop()
        roots = self.sweep_roots()
        self.start_lap(await loop.run_in_executor(self.writer, sweepmod.sweep, self, roots))

    def _freeze_node(self, n, fz):
        if n.dir is not None:
            live = n.live
            for name in sorted(n.dirtykids):
                e = self._freeze_node(live[name], fz)
                dirtree.put(self, n.dir, name, e)
            n.dirtykids.clear()
            dirtree.freeze(self, n.dir, fz)
        else:
            content.freeze(self, n.data, fz)
        n.dirty = False
        return n.entry()

    def write_commit(self, commit):
        """The disk half of a sync; runs on the writer thread."""
        t0 = time.perf_counter()
        write_commit(self.disk, self.bsize, commit.era, commit.blocks, commit.super_block,
                     commit.slot)
        commit.write_s = time.perf_counter() - t0

    def finish(self, commit):
        """After the commit is durable: its metadata blocks are clean cache entries now.  Its
        DATA blocks are let go: the kernel's page cache holds what was just written to the
        disk, and their memory serves the next writes (new memory costs page faults)."""
        era = commit.era
        for addr, btype, _ in commit.blocks:
            obj = self.pending.pop(addr, None)
            if obj is not None and btype != DATA:
                self.cache.put(addr, era, obj, self.mem_size(btype, obj))
        self.committed = commit.sb
        st = self.stats
        st["syncs"] += 1
        st["last_sync_s"] = commit.freeze_s + commit.write_s
        st["sync_s"] += st["last_sync_s"]
        st["blocks_written"] += len(commit.blocks) + 1
        st["bytes_written"] += (len(commit.blocks) + 1) * self.bsize

    def sync_now(self, use_reserve=False):
        """Freeze, write and commit on this thread (fmt, tools and tests; servers use sync)."""
        if self.failed is not None:
            self._write_now(self.failed)
        if not self.root.dirty:
            return False
        if self.short(use_reserve) and self.sweep_useful():
            self.sweep_now()
        if self.short(use_reserve):
            raise DiskFull()
        self._write_now(self.freeze())
        return True

    def _write_now(self, commit):
        self.failed = commit
        self.write_commit(commit)
        self.failed = None
        self.finish(commit)

    async def sync(self, use_reserve=False):
        """Sweep if the log needs room, freeze now, write off the event loop, commit.
        True if anything was written; DiskFull if even a sweep leaves too little room."""
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            wrote = False
            if self.failed is not None:
                await self._write(self.failed)
                wrote = True
            if not self.root.dirty:
                return wrote
            if self.short(use_reserve) and self.sweep_useful():
                await self.sweep()
            if self.short(use_reserve):
                raise DiskFull()
            await self._write(self.freeze())
            return True

    async def make_room(self, more=0):
        """True when the next freeze and `more` blocks fit outside the reserve, sweeping if
        that may help.  (The blocks a write is about to melt are not dirty yet: without `more`
        a write larger than the free log would never start the sweep that could make room.)"""
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            if self.short(more=more) and self.sweep_useful():
                await self.sweep()
            return not self.short(more=more)

    async def _write(self, commit):
        self.failed = commit
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.writer, self.write_commit, commit)
        except OSError as e:
            self.stats["sync_errors"] += 1
            raise FsError(f"i/o error: {e.strerror or e}") from e
        self.failed = None
        self.finish(commit)

    @property
    def committed_era(self):
        return self.committed["era"]


def _runs(refs):
    """Sorted (addr, era) refs split into runs of consecutive addresses (at most 4 MiB)."""
    runs, cur = [], []
    for r in refs:
        if cur and (r[0] != cur[-1][0] + 1 or len(cur) >= 256):
            runs.append(cur)
            cur = []
        cur.append(r)
    if cur:
        runs.append(cur)
    return runs


def _evictable(n):
    return (n.parent is not None and not n.dirty and n.refs <= 0 and n.opens <= 0
            and not n.live and n.tree().frozen())


def _decode_data(addr, payload):
    return payload


def _decode_leaf(addr, payload):
    ents = decode_leaf(addr, payload)
    return ([e[0] for e in ents], ents)


def _decode_node(addr, payload):
    kids = decode_node(addr, payload)
    return ([k[0] for k in kids], [(k[1], k[2]) for k in kids])



