"""The store: a mutable tree of nodes in memory over a log of frozen blocks on disk.

It offers the file tree's structural operations (lookup, create, remove, rename, read, write,
truncate) with no notion of users, permissions or protocols.  It is three parts, each in its
own module:

    store.py    the tree of nodes: loading, changing, trimming, and the freeze's walk
    blocks.py   frozen blocks: the cache, verified reads, blocks waiting to be written
    commit.py   the committer: the one state machine that freezes, writes, retries and sweeps

Sync (DESIGN invariants 1, 3, 5, 9) is the committer's: a freeze walks the dirty tree on the
event loop a slice at a time (changes wait for it to end, reads do not), giving every melted
block an address; the writer thread then writes the commit; the era advances at the freeze, so
later changes melt new copies while the commit is written.

Opening a disk reads the newest valid superblock and nothing else: nodes and blocks load when
first used, so start-up does not grow with the tree.
"""

import threading
import time
import weakref

from creepy.errors import CorruptBlock, DiskDamaged, FsError
from creepy.store import content, dirtree
from creepy.store import sweep as sweepmod
from creepy.store.blocks import Blocks
from creepy.store.commit import Committer
from creepy.store.format import (DMDIR, QSPACE_DERIVED, SUPER, FORMAT_VERSION, check_bsize, encode_block,
                                 claimed_era, encode_super, now_ns, payload_capacity,
                                 read_super_copies)
from creepy.store.node import Node

DEFAULT_CACHE = 256 << 20
NODE_COST = 1024
ROOT_PATH = 1
#: seconds of freezing between two turns of the event loop
FREEZE_SLICE = 0.005


class Store:
    #: what a melted DATA bytearray costs beyond its bytes (the object and its slack)
    MELTED_OVERHEAD = 64

    def __init__(self, disk, sb, cache_bytes=DEFAULT_CACHE, readonly=False, node_bytes=None):
        self.disk = disk
        self.sb = sb
        self.bsize = sb["bsize"]
        self.kind = sb["kind"]
        self.owner = sb["owner"]
        self.readonly = readonly
        self.era = sb["era"] + 1            # the era being built in memory
        self.nextpath = sb["nextpath"]
        self.say = lambda msg: None         # where the store reports faults (the server's log)
        self.blocks = b = Blocks(disk, self.bsize, cache_bytes)
        self.stats = b.stats                # one dict of counters for /stats
        self.cap, self.fanout = b.cap, b.fanout
        self.max_blocks = self.fanout ** 4
        # content.py and dirtree.py load blocks through these (bound once: they are hot)
        self.load_data, self.load_data_many = b.load_data, b.load_data_many
        self.load_ptrs, self.load_leaf, self.load_node = b.load_ptrs, b.load_leaf, b.load_node
        self.log, damaged = sweepmod.open_log(disk, sb)
        self.warnings = [damaged] if damaged else []    # what start-up found wrong
        self.committer = c = Committer(self)
        self.stats.update(c.stats)
        c.stats = self.stats
        self.nextspace = sb.get("nextspace", 1)   # the qid space the next link opens
        self.nmelted = 0                    # blocks melted since the last freeze
        self.nmelted_dir = 0                # of which directory blocks (may split at freeze)
        self.settled = False                # nmelted is exact (see settle)
        # Their memory: a DATA block at its length (content.py: a melted block may be short;
        # a kept one counts as cap) plus MELTED_OVERHEAD, any other block as bsize.  Exact
        # after settle, an upper bound before (a block dropped by a truncate or a remove
        # still counts).  A short block's allocation may be up to twice its length (a
        # bytearray that grew by pieces, or shrank by less than half, keeps its room), so
        # this is within 2x of the heap.
        self.melted_bytes = 0
        # Directory blocks the next freeze melts to put changed entries (need_blocks), counted
        # by changed(); nothing after settle() has put them.
        self.puts_due = 0
        # Buffers that kept blocks are views of (see write): id -> bytes, and their sum.  A
        # buffer lives while any view of it does, so what it costs is counted from the first
        # kept view to its death (weakref.finalize, on whichever thread drops the last view).
        self._kept = {}
        self.kept_bytes = 0
        self._kept_lock = threading.Lock()
        # Past this many bytes of buffers kept, data is copied instead (the tree layer sets
        # its dirty limit here).
        self.keep_limit = cache_bytes // 4
        self.root = Node.from_entry(sb["root"], None)
        self.orphans = set()                # removed files still open: the sweep keeps them
        self.pins = {}                      # name -> [root]: commits the sweep must keep
        # Loaded nodes beyond the root; past max_live, clean unheld ones are dropped.
        self.nlive = 0
        # A loaded node costs about NODE_COST bytes with its dictionaries.
        self.max_live = max(1024, (node_bytes or cache_bytes // 5) // NODE_COST)
        self._trim_at = self.max_live

    # --- opening and formatting ------------------------------------------------------------

    @classmethod
    def open(cls, disk, cache_bytes=DEFAULT_CACHE, readonly=False, node_bytes=None):
        """The store of the newest commit on disk that can be served (choose_commit).
        NotCreepy or DiskDamaged (one line each) when none can; `warnings` lists what was
        found wrong but served anyway."""
        sb, lost, warnings = choose_commit(disk)
        st = cls(disk, sb, cache_bytes, readonly, node_bytes)
        st.warnings = lost + warnings + st.warnings
        return st

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

    def close(self):
        """Wait for the writer and reader threads, then close the disk (the store owns the
        disk it was opened on)."""
        self.committer.close()
        self.blocks.close()
        self.disk.close()

    # --- what content.py and dirtree.py report ---------------------------------------------

    def note_melt(self, nbytes=None):
        """A block melted: a DATA block of nbytes (it may be short; a kept one is cap),
        else (nbytes None) a pointer block, whole."""
        self.nmelted += 1
        self.melted_bytes += self.bsize if nbytes is None else nbytes + self.MELTED_OVERHEAD

    def note_melt_blocks(self, count):
        """count whole DATA blocks melted (a run of kept blocks over holes)."""
        self.nmelted += count
        self.melted_bytes += count * (self.cap + self.MELTED_OVERHEAD)

    def note_grow(self, nbytes):
        """A melted DATA block grew by nbytes (shrank, when negative)."""
        self.melted_bytes += nbytes

    def note_melt_dir(self):
        self.nmelted += 1
        self.melted_bytes += self.bsize
        self.nmelted_dir += 1
        self.settled = False

    @property
    def pending(self):
        return self.blocks.pending

    @property
    def cache(self):
        return self.blocks.cache

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
        for name, n, e in self.children(d, after):
            yield name, (n.entry() if n is not None else e)

    def children(self, d, after=None):
        """(name, node, entry) of d in name order after `after`: node is the loaded child
        (whose metadata is the current one), or None and entry is what the directory holds
        (not loaded for this: a listing of a huge directory loads no nodes)."""
        live = d.live
        for name, e in dirtree.items(self, d.dir, after):
            yield name, live.get(name), e

    def changed(self, n, put=False):
        """n's entry must be written again: mark it and its ancestors dirty in this era.
        put: the caller puts n's entry into its directory now (the path to it melts there and
        is counted as it melts, not here)."""
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
            # The freeze puts c's entry into p's directory: a path of its tree melts
            if not put:
                self.puts_due += p.dir.depth + 1
            put = False
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
        d.mtime = now
        d.muid = muid
        self.changed(d)
        self.changed(n, put=True)
        dirtree.put(self, d.dir, n.name, n.entry())     # as a freeze would put it

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
        n = Node.from_entry((name,) + src.entry()[1:], d)
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
        if not n.isdir:
            self.orphans.add(n)
            self.release(n)
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

    def read(self, n, off, count, pieces=False):
        """Up to count bytes of n at off: bytes, or with pieces a list of bytes-like pieces
        (content.read)."""
        return content.read(self, n.data, off, count, n.length, pieces)

    def read_ahead(self, n, off, nbytes):
        """Start reading the DATA blocks of n's [off, off+nbytes) that are not in memory, on a
        reader thread (blocks.py)."""
        self.blocks.read_ahead(content.block_refs(self, n.data, off, nbytes, n.length))

    def write(self, n, off, data, keep=False):
        """Write data at off and grow the length; the caller sets mtime/muid and calls changed.
        keep: data never changes after this call, so whole blocks of it may be kept as they
        are instead of copied (content.py, kept blocks).  Only data whose buffer can be
        weakly referenced is kept (codec.FrameBuffer; bytes cannot), so that the whole buffer
        counts in dirty_bytes for as long as any kept block holds it: a later write over most
        of its blocks does not free it, nor does a commit while a view of it waits in a reply.
        Once the buffers kept pass keep_limit, data is copied: what pins them cannot grow the
        memory further."""
        if keep:                # (a write shorter than a block has no whole block to keep)
            keep = len(data) >= self.cap and self._keep(data)
        content.write(self, n.data, off, data, keep)
        end = off + len(data)
        if end > n.length:
            n.length = end

    def truncate(self, n, length):
        content.truncate(self, n.data, length, n.length)
        n.length = length

    def isempty(self, d):
        return d.dir.empty()

    # --- sync: the tree's side (the committer drives it) --------------------------------------

    @property
    def dirty(self):
        """Something is not on the disk yet: a change to the tree, a removed file's change, or
        a commit whose write failed."""
        return (self.root.dirty or self.committer.failed is not None
                or any(not n.data.frozen() for n in self.orphans))

    def dirty_bytes(self):
        """What the dirty tree holds in memory, in bytes: the melted blocks (a short DATA
        block, such as a small file's, at its length), or the buffers kept blocks are views of
        when those are more (a kept block counts once as a melted block and once in its
        buffer, so this is never short by more than half)."""
        melted = self.melted_bytes
        return melted if melted >= self.kept_bytes else self.kept_bytes

    def _keep(self, data):
        """Count data's buffer in kept_bytes until it dies; False if it cannot be watched."""
        base = memoryview(data).obj
        if base.__class__ is bytes:     # cannot be watched
            return False
        key = id(base)
        if key in self._kept:
            return True
        if self.kept_bytes >= self.keep_limit:
            return False
        try:
            weakref.finalize(base, self._unkeep, key)
        except TypeError:
            return False
        size = memoryview(base).nbytes
        with self._kept_lock:
            self._kept[key] = size
            self.kept_bytes += size
        return True

    def _unkeep(self, key):
        with self._kept_lock:
            self.kept_bytes -= self._kept.pop(key)

    def need_blocks(self):
        """An upper bound on the blocks the next freeze allocates.  Quick: every melted block,
        twice for directory blocks (a leaf may split when its entries are updated at freeze),
        twice the directory blocks the freeze will melt to put the entries of changed files
        (puts_due: a leaf-to-root path of the directory for each, which may split too), and a
        little for new root levels.  Exact after settle(): the melted blocks."""
        if self.settled:
            return self.nmelted
        return self.nmelted + self.nmelted_dir + 2 * self.puts_due + 16

    def settle(self):
        """Put every dirty node's entry into its directory now, so that the splits a freeze
        would make happen here, then count the melted blocks reachable from the dirty tree and
        the removed-but-open files.  Afterwards the count is exactly what a freeze writes:
        entry sizes are estimated from their strings only (dirtree.entry_est), so the entries
        freeze puts with real addresses split nothing more, and freeze encodes every
        estimated-to-fit block into one block."""
        dirs = 0
        files = list(self.orphans)
        stack = [self.root] if self.root.dirty else []
        while stack:
            n = stack.pop()
            if n.dir is not None:
                live = n.live
                for name in n.dirtykids:
                    kid = live[name]
                    dirtree.put(self, n.dir, name, kid.entry())
                    stack.append(kid)
                dirs += dirtree.melted(n.dir)
            else:
                files.append(n)
        data = nbytes = 0
        for n in files:
            blocks, size = content.melted(self, n.data)
            data += blocks
            nbytes += size
        self.nmelted, self.nmelted_dir = data + dirs, dirs
        self.melted_bytes = nbytes + dirs * self.bsize
        self.puts_due = 0
        self.settled = True

    def freeze_tree(self, fz):
        """Generator: give every melted block of the dirty tree and of the removed-but-open
        files an address (through fz.put), children before their parents, and return the
        entry of /root.  It yields about every FREEZE_SLICE seconds so the event loop can serve
        readers; the committer holds changes back until it returns.  Depth costs no stack: the
        walk keeps its own (DESIGN invariant 10)."""
        clock = time.perf_counter
        until = clock() + FREEZE_SLICE
        work = 0
        for n in list(self.orphans):
            if not n.data.frozen():
                yield from content.freeze(self, n.data, fz)
        root = self.root
        if not root.dirty:
            return root.entry()
        stack = [(root, iter(list(root.dirtykids)))]
        while stack:
            d, kids = stack[-1]
            for name in kids:
                kid = d.live.get(name)
                if kid is None:         # frozen by a freeze that raised, then let go
                    continue
                if kid.dirtykids:
                    stack.append((kid, iter(list(kid.dirtykids))))
                    break
                if kid.dir is not None:
                    yield from dirtree.freeze(self, kid.dir, fz)
                else:
                    yield from content.freeze(self, kid.data, fz)
                kid.dirty = False
                dirtree.put(self, d.dir, name, kid.entry())
                work += 1
                if work & 63 == 0 and clock() > until:
                    yield
                    until = clock() + FREEZE_SLICE
            else:
                stack.pop()
                d.dirtykids.clear()
                yield from dirtree.freeze(self, d.dir, fz)
                d.dirty = False
                if stack:
                    dirtree.put(self, stack[-1][0].dir, d.name, d.entry())
                if clock() > until:
                    yield
                    until = clock() + FREEZE_SLICE
        return root.entry()

    def froze(self):
        """A freeze ended: nothing is melted any more."""
        self.nmelted = self.nmelted_dir = self.melted_bytes = self.puts_due = 0
        self.settled = False

    def sweep_roots(self):
        """Roots the sweep keeps besides the newest commit: removed-but-open files, pins."""
        roots = sweepmod.orphan_roots(self)
        for rs in self.pins.values():
            roots.extend(rs)
        return roots

    def release(self, n):
        """Nothing holds n any more: if it was removed, its blocks go (memory at once, disk
        space at the next sweep)."""
        if n.removed and n.refs <= 0 and n in self.orphans:
            self.orphans.discard(n)
            # exact after settle, an upper bound before: either stays true
            blocks, nbytes = content.melted(self, n.data)
            self.nmelted = max(0, self.nmelted - blocks)
            self.melted_bytes = max(0, self.melted_bytes - nbytes)
            n.data = content.Content()

    # --- sync: the committer's programs, for the layers above ----------------------------------

    @property
    def committed(self):
        return self.committer.committed

    @property
    def committed_era(self):
        return self.committer.committed["era"]

    def short(self, use_reserve=False, more=0):
        return self.committer.short(use_reserve, more)

    @property
    def freezing(self):
        return self.committer.freezing

    def sync_now(self, use_reserve=False):
        """Freeze, write and commit on this thread (fmt, tools and tests; servers use sync)."""
        c = self.committer
        return c.run_now(c.sync(use_reserve))

    def sweep_now(self):
        c = self.committer
        return c.run_now(c.sweep())

    async def sync(self, use_reserve=False):
        """Commit the tree as it is now; True if anything was written.  DiskFull if even a
        sweep leaves too little room; FsError(EIO) if the write failed (retried first by the
        next sync).  Cancelling the caller does not cancel the commit."""
        c = self.committer
        return await c.run(c.sync(use_reserve))

    async def make_room(self, more=0, use_reserve=False):
        """True when the next freeze and `more` blocks fit outside the reserve (inside it with
        use_reserve), after sweeping and committing if that helps."""
        c = self.committer
        return await c.run(c.make_room(more, use_reserve))

    async def sweep(self):
        c = self.committer
        return await c.run(c.sweep())


def choose_commit(disk):
    """(superblock, lost, warnings): the commit a disk should be served from.

    The newest valid superblock copy, unless the disk is shorter than it says (refused) or its
    root directory block is damaged: then the other copy, one era older, if its root reads
    (its blocks are intact: no commit after it reused them, since the newest commit allocated
    past them and a sweep marks from the newest commit).  `lost` says why a newer commit may be
    lost, `warnings` what else was found wrong and served anyway.  Raises NotCreepy (no valid superblock) or
    DiskDamaged (nothing servable), each with a one-line message."""
    copies, rejected = read_super_copies(disk.pread)
    sb = copies[0]
    warnings, lost = [], []
    for why in rejected:
        era = claimed_era(why)
        if era is not None and era > sb["era"]:
            lost.append(f"superblock {why}: era {era} is lost; era {sb['era']} is used")
        else:
            warnings.append(f"superblock {why}; era {sb['era']} of the other copy is used "
                            f"(the next commit writes that copy again)")
    if sb["nblocks"] * sb["bsize"] > disk.size:
        raise DiskDamaged(f"the superblock says {sb['nblocks']} blocks of {sb['bsize']} bytes, "
                          f"but the disk has only {disk.size} bytes (truncated?)")
    try:
        _verify_root(disk, sb)
    except CorruptBlock as e:
        older = copies[1] if len(copies) > 1 else None
        try:
            if older is None:
                raise e
            _verify_root(disk, older)
        except CorruptBlock:
            raise DiskDamaged(f"the root directory of era {sb['era']} is damaged ({e}) and no "
                              f"older commit can replace it; run creepy check") from None
        lost.append(f"the root directory of era {sb['era']} is damaged ({e}): era "
                    f"{sb['era']} is lost; era {older['era']} of the other superblock copy "
                    f"is used")
        sb = older
    return sb, lost, warnings


def _verify_root(disk, sb):
    """Read and verify the top block of sb's /root (CorruptBlock when it is bad)."""
    r = sweepmod.entry_root(sb["root"])
    if r is not None:
        if not 2 <= r[0] < sb["nblocks"]:
            raise CorruptBlock(r[0], "root directory outside the disk")
        sweepmod.TreeReader(disk, sb["bsize"], sb["era"]).children(r[0], r[1], r[2])


def _evictable(n):
    return (n.parent is not None and not n.dirty and n.refs <= 0 and n.opens <= 0
            and not n.live and n.tree().frozen())
