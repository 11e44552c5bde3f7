"""A file's bytes: a tree of DATA blocks under PTR blocks, frozen on disk and melted in memory.

A reference to a block is either *frozen*, a tuple (addr, era) naming a block on disk (or about
to be), or *melted*, an in-memory object with no address: a bytearray for a DATA block, an MPtr
for a PTR block.  None is a hole (zeros).  Frozen blocks are never changed (DESIGN invariant 3):
changing one melts it, a copy that replaces the reference in its (melted) parent.  freeze() gives
every melted block an address and turns the tree back into frozen references.

A melted DATA bytearray may be shorter than a block: what lies past its end reads as zeros.  A
block melted from a hole starts empty and grows with what is written into it, so a 1 KiB file
holds 1 KiB of memory, not a block; freeze pads it to the whole block the disk holds, so a
frozen block is always `cap` bytes.  The store counts the bytes of melted blocks as they grow
(st.note_melt, st.note_grow) for its dirty limit.

A melted DATA block may also be *kept*: a read-only memoryview of exactly one block of data a
write was given with keep=True (data that never changes afterwards, such as a Twrite's frame):
whole blocks of such a write are kept as they are instead of copied.  The store decides what
may be kept and counts the buffers they hold (store.Store.write).  A kept block is never
changed either: a later write into it melts a copy, as for a frozen one.

This module knows the tree's shape and nothing of disks: `st` (the store) loads frozen blocks,
counts melted ones and, at freeze, takes the encoded blocks.
"""

from creepy.errors import EBIGFILE, FsError
from creepy.store.format import DATA, PTRBLK, PtrBlock, encode_ptrs


class MPtr:
    """A melted pointer block: slots of None, frozen (addr, era) or melted children."""
    __slots__ = ("slots",)

    def __init__(self, slots):
        self.slots = slots


class Content:
    """The data tree of one file: root reference and depth (PTR levels above the DATA blocks)."""
    __slots__ = ("root", "depth")

    def __init__(self, root=None, depth=0):
        self.root = root
        self.depth = depth

    def frozen(self):
        return self.root is None or type(self.root) is tuple


def _capacity(st, depth):
    return st.fanout ** depth   # in blocks


def read(st, c, off, n, length, pieces=False):
    """Up to n bytes at off of a file of `length` bytes: bytes, or with pieces a list of
    bytes-like pieces in order, never joined (for a reply written as it is).

    A melted block is copied (a write may change it after this returns); a frozen one is
    handed out as it is, or as a view of it: it never changes (a write melts a copy)."""
    if off >= length or n <= 0:
        return [] if pieces else b""
    n = min(n, length - off)
    cap = st.cap
    end = off + n
    first, last = off // cap, (end - 1) // cap
    refs = _span(st, c, first, last)
    fetched = st.load_data_many([r for r in refs if type(r) is tuple])  # one disk read a run
    out = []
    for i, ref in enumerate(refs):
        bo = off - (first + i) * cap
        k = min(cap - bo, end - off)
        if ref is None:
            out.append(bytes(k))
        elif type(ref) is tuple:
            blk = fetched.get(ref[0])
            if blk is None:
                blk = st.load_data(ref)
            out.append(memoryview(blk)[bo:bo + k] if bo or k != len(blk) else blk)
        elif type(ref) is memoryview:           # kept: it never changes
            out.append(ref[bo:bo + k] if bo or k != len(ref) else ref)
        else:                                   # melted, and maybe short: zeros past it
            piece = bytes(memoryview(ref)[bo:bo + k])
            out.append(piece if len(piece) == k else piece + bytes(k - len(piece)))
        off += k
    if pieces:
        return out
    return bytes(out[0]) if len(out) == 1 else b"".join(out)


def _span(st, c, first, last):
    """The references of the DATA blocks first..last (None for holes), walking each pointer
    block once."""
    out = []
    top = min(last, _capacity(st, c.depth) - 1)     # blocks past the tree's reach are holes
    if c.root is not None and first <= top:
        _collect_span(st, c.root, c.depth, first, top, out)
    out.extend([None] * (last - first + 1 - len(out)))
    return out


def _collect_span(st, ref, depth, first, last, out):
    if depth == 0:
        out.append(ref)
        return
    span = st.fanout ** (depth - 1)
    if ref is None:
        out.extend([None] * (last - first + 1))
        return
    slots = ref.slots if type(ref) is MPtr else st.load_ptrs(ref)
    if depth == 1:                          # the DATA references themselves, in one slice
        out.extend(slots[first:last + 1])
        return
    for i in range(first // span, last // span + 1):
        lo = max(first, i * span) - i * span
        hi = min(last, i * span + span - 1) - i * span
        _collect_span(st, slots[i], depth - 1, lo, hi, out)


def _find(st, c, bi):
    """The DATA block (bytes or bytearray) holding block index bi, or None for a hole."""
    ref, depth = c.root, c.depth
    if ref is None or bi >= _capacity(st, depth):
        return None
    fan = st.fanout
    while depth > 0:
        span = fan ** (depth - 1)
        slots = ref.slots if type(ref) is MPtr else st.load_ptrs(ref)
        ref = slots[bi // span]
        if ref is None:
            return None
        bi %= span
        depth -= 1
    return st.load_data(ref) if type(ref) is tuple else ref


def block_refs(st, c, off, nbytes, length):
    """The frozen (addr, era) of the DATA blocks holding [off, off+nbytes), within length."""
    end = min(off + nbytes, length)
    if c.root is None or end <= off:
        return []
    return [r for r in _span(st, c, off // st.cap, (end - 1) // st.cap) if type(r) is tuple]


def write(st, c, off, data, keep=False):
    """Write data at off, growing the tree as needed; the caller updates the length.  With
    keep, data never changes after this call: its whole blocks are kept, not copied."""
    cap = st.cap
    end = off + len(data)
    if end == off:
        return
    nblocks = (end + cap - 1) // cap
    if nblocks > st.max_blocks:
        raise FsError(EBIGFILE)
    _grow(st, c, nblocks)
    mv = memoryview(data)
    if keep:
        mv = mv.toreadonly()
    pos = 0
    fan = st.fanout
    while off < end:
        bi, bo = divmod(off, cap)
        if c.depth == 0:
            k = min(cap - bo, end - off)
            if bo == 0 and k == cap:        # a whole block: made from the data, not zeroed
                _melt_block(st, c, bi, init=mv[pos:pos + k])
            else:
                _put(st, _melt_block(st, c, bi), bo, mv[pos:pos + k])
            off += k
            pos += k
            continue
        # The pointer block above bi is melted once for every block of it the data reaches.
        slots = _melt_ptr_above(st, c, bi).slots
        i = bi % fan
        while off < end and i < fan:
            k = min(cap - bo, end - off)
            if bo == 0 and k == cap:
                if keep:
                    # The run of whole blocks under this pointer block, kept in one go.
                    n = min(fan - i, (end - off) // cap)
                    olds = slots[i:i + n]
                    holes = olds.count(None)
                    if holes:
                        st.note_melt_blocks(holes)
                    if holes < n:
                        for old in olds:
                            t = type(old)
                            if t is bytearray:
                                st.note_grow(cap - len(old))
                            elif t is tuple:
                                st.note_melt(cap)
                    slots[i:i + n] = [mv[p:p + cap] for p in range(pos, pos + n * cap, cap)]
                    off += n * cap
                    pos += n * cap
                    i += n
                    continue
                else:
                    slots[i] = _melt_data(st, slots[i], mv[pos:pos + k])
            else:
                blk = slots[i] = _melt_data(st, slots[i])
                _put(st, blk, bo, mv[pos:pos + k])
            off += k
            pos += k
            bo = 0
            i += 1


def _put(st, blk, bo, piece):
    """Put piece at bo of the melted block blk, growing it (zeros before bo) as needed."""
    n = len(blk)
    end = bo + len(piece)
    if end > n:
        if bo > n:
            blk.extend(bytes(bo - n))
        st.note_grow(end - n)
    blk[bo:end] = piece


def _grow(st, c, nblocks):
    if c.root is None:
        d = 0
        while _capacity(st, d) < nblocks:
            d += 1
        c.depth = d
        return
    while _capacity(st, c.depth) < nblocks:
        slots = [None] * st.fanout
        slots[0] = c.root
        c.root = MPtr(slots)
        st.note_melt()
        c.depth += 1


def _melt_ptr(st, ref):
    if type(ref) is MPtr:
        return ref
    st.note_melt()
    if ref is None:
        return MPtr([None] * st.fanout)
    return MPtr(list(st.load_ptrs(ref)))


def _melt_data(st, ref, init=None):
    """The melted DATA block (a bytearray) for ref; init, when given, is its whole new
    content.  A hole melts into an empty block (zeros to its end), a frozen or kept block into
    a copy of it."""
    t = type(ref)
    if t is bytearray:
        if init is not None:
            st.note_grow(len(init) - len(ref))
            ref[:] = init
        return ref
    if init is not None:
        blk = bytearray(init)
    elif ref is None:
        blk = bytearray()
    else:
        blk = bytearray(ref if t is memoryview else st.load_data(ref))
    if t is memoryview:             # a kept block was counted whole when it was kept
        st.note_grow(len(blk) - st.cap)
    else:
        st.note_melt(len(blk))
    return blk


def _melt_ptr_above(st, c, bi):
    """The melted pointer block (depth 1) whose slots hold DATA block bi, with every pointer
    block on the way melted; the tree is at least one level deep."""
    depth = c.depth
    c.root = node = _melt_ptr(st, c.root)
    fan = st.fanout
    while depth > 1:
        span = fan ** (depth - 1)
        i, bi = divmod(bi, span)
        child = _melt_ptr(st, node.slots[i])
        node.slots[i] = child
        node = child
        depth -= 1
    return node


def _melt_block(st, c, bi, init=None):
    depth = c.depth
    if depth == 0:
        c.root = _melt_data(st, c.root, init)
        return c.root
    c.root = node = _melt_ptr(st, c.root)
    fan = st.fanout
    while True:
        span = fan ** (depth - 1)
        i, bi = divmod(bi, span)
        if depth == 1:
            blk = node.slots[i] = _melt_data(st, node.slots[i], init)
            return blk
        child = _melt_ptr(st, node.slots[i])
        node.slots[i] = child
        node = child
        depth -= 1


def truncate(st, c, newlen, oldlen):
    """Cut the file to newlen bytes (growing only changes the length: the new part is a hole).

    The tail of the new last block is zeroed so that a later extension reads zeros, and blocks
    past it are dropped from the tree (their space is reclaimed by the next sweep)."""
    if newlen >= oldlen:
        return
    cap = st.cap
    if newlen == 0 or c.root is None:
        c.root, c.depth = None, 0
        return
    keep = (newlen + cap - 1) // cap
    if keep < _capacity(st, c.depth):      # else the tree holds nothing past the new end
        c.root = _prune(st, c.root, c.depth, keep)
    tail = newlen % cap
    if tail and _find(st, c, keep - 1) is not None:
        blk = _melt_block(st, c, keep - 1)
        if len(blk) > tail:                 # a melted block ends in zeros it need not hold
            st.note_grow(tail - len(blk))
            del blk[tail:]
    while c.depth > 0 and keep <= _capacity(st, c.depth - 1):
        slots = c.root.slots if type(c.root) is MPtr else st.load_ptrs(c.root)
        c.root = slots[0]
        c.depth -= 1
        if c.root is None:
            c.depth = 0
            break


def _prune(st, ref, depth, keep):
    """ref's subtree with only its first `keep` blocks; melts only what changes."""
    if ref is None or depth == 0:
        return ref
    span = st.fanout ** (depth - 1)
    k = (keep + span - 1) // span
    slots = ref.slots if type(ref) is MPtr else st.load_ptrs(ref)
    child = _prune(st, slots[k - 1], depth - 1, keep - (k - 1) * span)
    if child is slots[k - 1] and all(s is None for s in slots[k:]):
        return ref
    node = _melt_ptr(st, ref)
    node.slots[k - 1] = child
    for i in range(k, len(node.slots)):
        node.slots[i] = None
    return node


#: DATA blocks frozen between two yields of a freeze
FREEZE_BLOCKS = 1024


def freeze(st, c, fz):
    """Generator: give every melted block of the tree an address (children first); c.root is
    a frozen reference when it returns.  It yields every FREEZE_BLOCKS data blocks, so a big
    file lets the event loop serve between slices; meanwhile readers find each slot either
    melted or frozen (its block waits in the store's pending map), both of which read."""
    c.root = yield from _freeze(st, c.root, c.depth, fz)
    if c.root is None:          # nothing but holes: an empty tree has no levels
        c.depth = 0


def _freeze(st, ref, depth, fz):
    t = type(ref)
    if ref is None or t is tuple:
        return ref
    if t is bytearray or t is memoryview:
        return _freeze_data(st, ref, fz)
    slots = ref.slots
    for i, s in enumerate(slots):
        if s is None or type(s) is tuple:
            continue
        if depth == 1:
            slots[i] = _freeze_data(st, s, fz)
            if len(fz.blocks) % FREEZE_BLOCKS == 0:
                yield
        else:
            slots[i] = yield from _freeze(st, s, depth - 1, fz)
    if all(s is None for s in slots):
        return None
    payload = encode_ptrs(slots)
    return fz.put(PTRBLK, payload, PtrBlock(payload))


def _freeze_data(st, blk, fz):
    """The frozen reference for a melted DATA block.  The bytearray (or kept view) itself
    becomes the frozen block: the tree now holds its address, so nothing can change it again
    (a write melts a copy).  A short one is made whole for the disk first (zeros to cap)."""
    if type(blk) is bytearray and len(blk) < st.cap:
        blk.extend(bytes(st.cap - len(blk)))
    return fz.put(DATA, blk, blk)


def melted(st, c):
    """(blocks, bytes): how many melted blocks the tree holds, and their memory as the store
    counts it (st.note_melt)."""
    count = nbytes = 0
    stack = [c.root]
    while stack:
        r = stack.pop()
        t = type(r)
        if t is bytearray:
            count += 1
            nbytes += len(r) + st.MELTED_OVERHEAD
        elif t is memoryview:           # kept: counted as a whole melted block
            count += 1
            nbytes += st.cap + st.MELTED_OVERHEAD
        elif t is MPtr:
            count += 1
            nbytes += st.bsize
            stack.extend(s for s in r.slots if s is not None and type(s) is not tuple)
    return count, nbytes
