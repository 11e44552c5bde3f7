"""The on-disk format of creepy, version 1: every byte that reaches a disk is encoded here.

This module turns blocks, superblocks and directory entries into bytes and back, and verifies
what it reads.  It never does I/O and never decides *where* a block goes (that is log.py).

Disk
----
A disk is an array of `nblocks` blocks of `bsize` bytes (a power of two, 1 KiB to 64 KiB; 16 KiB
by default).  A block's *address* is its index: byte offset = address * bsize.  Address 0 is also
the nil pointer, which is safe because block 0 is a superblock copy and never pointed to.

    address            contents
    0                  superblock copy A (commits of even era)
    1                  superblock copy B (commits of odd era)
    2 .. 2+m-1         mark area 0     (m = mark blocks per area; m = 0 on a WORM disk)
    2+m .. 2+2m-1      mark area 1
    2+2m .. nblocks-1  the log: every tree block lives here

Block header (32 bytes, little-endian; struct HEADER = "<2sBBIQQQ"):

    offset size field
    0      2    magic    b"cr"
    2      1    type     SUPER=1 DATA=2 PTR=3 LEAF=4 NODE=5 MARK=6
    3      1    version  FORMAT_VERSION (1)
    4      4    length   payload bytes in use (<= bsize - 32)
    8      8    addr     the block's own address
    16     8    era      birth era: the commit that wrote it
    24     8    hash     xxh3_64 of header bytes 0..23 followed by bytes 32..bsize-1 (the
                        payload and the zero padding after it)
    32     ...  payload

Every read checks magic, type, version, length, address, era (not newer than the commit being
read, and equal to the era the pointer expected) and the hash; a mismatch raises CorruptBlock
naming the address.  The hash covers the whole block but its own field, so a flipped byte
anywhere, padding included, is caught.

Payloads
--------
DATA   raw file bytes: always `cap = bsize - 32` bytes (a file's tail block is zero padded).
PTR    `cap // 16` pointers, each "<QQ" = (addr, era); (0, 0) is a hole.  length = 16 * count.
LEAF   msgpack [entry, ...]: a directory B+tree leaf, entries sorted by name (bytewise UTF-8).
NODE   msgpack [[first_name, addr, era], ...]: a directory B+tree interior node, sorted.
MARK   a bitmap slice: bit i of byte j marks block (slice_index * cap + j) * 8 + i as live.
SUPER  msgpack map, see encode_super.

Directory entry (msgpack array, positions fixed; the field order is the format):

    0 name    str    file name (UTF-8, no '/' or NUL)
    1 path    int    qid.path: unique, never reused on this disk
    2 mode    int    9P mode bits (DMDIR, DMAPPEND, DMEXCL, DMTMP, permission 0777)
    3 uid     str    owner name
    4 gid     str    group name
    5 muid    str    last modifier's name
    6 atime   int    access time, ns since the epoch
    7 mtime   int    modification time, ns since the epoch
    8 length  int    file length in bytes (0 for directories)
    9 vers    int    qid.vers: bumped on every change
    10 era    int    newest era in which this file, or for a directory anything below it, changed
    11 addr   int    root block of the content: a file's DATA/PTR tree, a directory's LEAF/NODE tree
    12 rera   int    birth era of that root block
    13 depth  int    file: levels of PTR blocks above the DATA blocks (0: the root is a DATA
                     block); directory: levels of NODE blocks above the leaves.  addr 0: empty.

A file of depth d holds up to cap * (cap // 16) ** d bytes: with 16 KiB blocks depth 3 already
passes 1 TiB.  Directories are B+trees, so a million entries cost a few hundred leaves.
"""

import struct
import time

import msgpack
import xxhash

from creepy.errors import CorruptBlock, NotCreepy

MAGIC = b"cr"
FORMAT_VERSION = 1
HEADER = struct.Struct("<2sBBIQQQ")
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 32
PTR = struct.Struct("<QQ")
assert PTR.size == 16

SUPER, DATA, PTRBLK, LEAF, NODE, MARK = 1, 2, 3, 4, 5, 6
TYPE_NAMES = {SUPER: "super", DATA: "data", PTRBLK: "ptr", LEAF: "leaf", NODE: "node", MARK: "mark"}

# Mode bits, as 9P2000 defines them (the disk stores 9P modes as they are).
DMDIR = 0x80000000
DMAPPEND = 0x40000000
DMEXCL = 0x20000000
DMTMP = 0x04000000
MODE_BITS = DMDIR | DMAPPEND | DMEXCL | DMTMP | 0o777

MIN_BSIZE = 1024
MAX_BSIZE = 64 * 1024
DEFAULT_BSIZE = 16 * 1024

# Directory entry field positions.
E_NAME, E_PATH, E_MODE, E_UID, E_GID, E_MUID, E_ATIME, E_MTIME, E_LENGTH, E_VERS, E_ERA, \
    E_ADDR, E_RERA, E_DEPTH = range(14)
ENTRY_FIELDS = 14

_xxh = xxhash.xxh3_64_intdigest
_pack = msgpack.Packer(use_bin_type=True).pack


def payload_capacity(bsize):
    return bsize - HEADER_SIZE


def ptrs_per_block(bsize):
    return payload_capacity(bsize) // PTR.size


def check_bsize(bsize):
    if bsize < MIN_BSIZE or bsize > MAX_BSIZE or bsize & (bsize - 1):
        raise ValueError(f"block size {bsize} is not a power of two from {MIN_BSIZE} to {MAX_BSIZE}")


def encode_block(btype, addr, era, payload, bsize):
    """A whole block: header, payload, zero padding to bsize."""
    return b"".join(encode_block_parts(btype, addr, era, payload, bsize))


_ZEROS = bytes(MAX_BSIZE)


def encode_block_parts(btype, addr, era, payload, bsize):
    """The block as buffers to write one after the other (header, payload, padding), so a
    commit hands the payload to pwritev without copying it into a block first."""
    n = len(payload)
    if n > bsize - HEADER_SIZE:
        raise ValueError(f"payload of {n} bytes does not fit a {bsize}-byte block")
    head = HEADER.pack(MAGIC, btype, FORMAT_VERSION, n, addr, era, 0)[:24]
    h = xxhash.xxh3_64(head)
    h.update(payload)
    pad = bsize - HEADER_SIZE - n
    zeros = memoryview(_ZEROS)[:pad]
    if pad:
        h.update(zeros)
    head += h.intdigest().to_bytes(8, "little")
    return [head, payload, zeros] if pad else [head, payload]


def decode_block(raw, addr, want_type=None, want_era=None, max_era=None, copy=True):
    """Verify the block raw (all bsize bytes of it) read from `addr`; return (type, era,
    payload).  want_type may be an int or a tuple of ints; want_era is the era its pointer
    recorded.  With copy=False the payload is a view into raw."""
    if len(raw) < HEADER_SIZE:
        raise CorruptBlock(addr, f"short read ({len(raw)} bytes)")
    magic, btype, version, n, baddr, era, h = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise CorruptBlock(addr, "bad magic" if any(raw[:HEADER_SIZE]) else "never written")
    if version != FORMAT_VERSION:
        raise CorruptBlock(addr, f"format version {version}")
    if baddr != addr:
        raise CorruptBlock(addr, f"block claims address {baddr}")
    if n > len(raw) - HEADER_SIZE:
        raise CorruptBlock(addr, f"length {n} exceeds block")
    if want_type is not None and btype != want_type and not (
            isinstance(want_type, tuple) and btype in want_type):
        raise CorruptBlock(addr, f"type {TYPE_NAMES.get(btype, btype)}, expected "
                                 f"{_type_names(want_type)}")
    if want_era is not None and era != want_era:
        raise CorruptBlock(addr, f"born in era {era}, pointer expects era {want_era}")
    if max_era is not None and era > max_era:
        raise CorruptBlock(addr, f"born in era {era}, after the commit being read ({max_era})")
    mv = memoryview(raw)
    x = xxhash.xxh3_64(mv[:24])
    x.update(mv[HEADER_SIZE:])
    payload = mv[HEADER_SIZE:HEADER_SIZE + n]
    if copy:
        payload = bytes(payload)
    if x.intdigest() != h:
        raise CorruptBlock(addr, "checksum mismatch")
    return btype, era, payload


def _type_names(t):
    if isinstance(t, tuple):
        return " or ".join(TYPE_NAMES.get(x, str(x)) for x in t)
    return TYPE_NAMES.get(t, str(t))


def unpack_payload(addr, payload, use_list=True):
    try:
        return msgpack.unpackb(payload, raw=False, use_list=use_list, strict_map_key=False)
    except Exception as e:  # msgpack raises several types on garbage
        raise CorruptBlock(addr, f"bad metadata: {e}") from None


# --- pointer blocks -------------------------------------------------------------------------

def encode_ptrs(ptrs):
    """ptrs: a list of (addr, era) or None, as long as the block's pointer count."""
    out = bytearray(PTR.size * len(ptrs))
    for i, p in enumerate(ptrs):
        if p is not None:
            PTR.pack_into(out, i * 16, p[0], p[1])
    return bytes(out)


class PtrBlock:
    """A frozen PTR block kept as its payload and decoded slot by slot when read: a list of
    tuples would cost about seven times the block's size in memory."""
    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    def __len__(self):
        return len(self.raw) // 16

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(lo, hi, step)]
            return [(a, e) if a else None
                    for a, e in PTR.iter_unpack(memoryview(self.raw)[lo * 16:max(lo, hi) * 16])]
        a, e = PTR.unpack_from(self.raw, i * 16)
        return (a, e) if a else None

    def __iter__(self):
        for a, e in PTR.iter_unpack(self.raw):
            yield (a, e) if a else None


def decode_ptrs(addr, payload, count):
    if len(payload) != count * PTR.size:
        raise CorruptBlock(addr, f"pointer block of {len(payload)} bytes, expected {count * 16}")
    return PtrBlock(payload)


# --- directory entries ----------------------------------------------------------------------

def check_entry(addr, e):
    if (not isinstance(e, (tuple, list)) or len(e) != ENTRY_FIELDS or not isinstance(e[E_NAME], str)
            or not all(isinstance(e[i], int) for i in (E_PATH, E_MODE, E_ATIME, E_MTIME,
                                                       E_LENGTH, E_VERS, E_ERA, E_ADDR,
                                                       E_RERA, E_DEPTH))
            or not all(isinstance(e[i], str) for i in (E_UID, E_GID, E_MUID))):
        raise CorruptBlock(addr, f"bad directory entry {e!r:.80}")
    return e


def encode_leaf(entries):
    return _pack(entries)


def decode_leaf(addr, payload):
    """The entries of a LEAF block: a tuple of entry tuples.  Tuples, not lists: a tuple of
    numbers and strings is left out of the garbage collector's scans once it has seen it, and
    a server caches many thousands of decoded leaves."""
    entries = unpack_payload(addr, payload, use_list=False)
    if not isinstance(entries, tuple):
        raise CorruptBlock(addr, "leaf is not a list")
    prev = None
    for e in entries:
        check_entry(addr, e)
        if prev is not None and prev >= e[E_NAME].encode():
            raise CorruptBlock(addr, "leaf entries out of order")
        prev = e[E_NAME].encode()
    return entries


def encode_node(children):
    return _pack(children)


def decode_node(addr, payload):
    kids = unpack_payload(addr, payload)
    if not isinstance(kids, list) or not kids:
        raise CorruptBlock(addr, "interior node is empty")
    for k in kids:
        if (not isinstance(k, list) or len(k) != 3 or not isinstance(k[0], str)
                or not isinstance(k[1], int) or not isinstance(k[2], int) or k[1] <= 0):
            raise CorruptBlock(addr, f"bad interior node slot {k!r:.80}")
    return kids


def entry_size(e):
    return len(_pack(e))


# --- superblock -----------------------------------------------------------------------------

SUPER_FIELDS = ("version", "kind", "bsize", "nblocks", "marks", "era", "root", "nextpath",
                "cursor", "sweep", "owner", "stamp")
KINDS = ("main", "worm")


def encode_super(sb):
    """sb: a dict with SUPER_FIELDS.

    version   FORMAT_VERSION
    kind      "main" or "worm"
    bsize     block size in bytes
    nblocks   blocks on the disk (the disk may be larger; the rest is unused)
    marks     blocks per mark area (0 on a WORM)
    era       this commit's era; the copy at address era % 2 holds it
    root      the directory entry of /root (see above)
    nextpath  the next qid.path to hand out
    cursor    [next, left]: the log's head, where the next allocation looks first, and how many
              blocks of the current lap it has not passed yet (log.py)
    sweep     None, or [area, free, era]: the mark area (0 or 1) holding the last sweep's
              bitmap, how many blocks it found free, and the era its MARK blocks carry
    owner     the Unix user who formatted the disk
    stamp     wall-clock time of the commit, ns
    """
    missing = [f for f in SUPER_FIELDS if f not in sb]
    if missing:
        raise ValueError(f"superblock lacks {missing}")
    return _pack({f: sb[f] for f in SUPER_FIELDS})


def decode_super(addr, payload):
    sb = unpack_payload(addr, payload)
    if not isinstance(sb, dict) or any(f not in sb for f in SUPER_FIELDS):
        raise CorruptBlock(addr, "superblock lacks fields")
    if sb["version"] != FORMAT_VERSION:
        raise CorruptBlock(addr, f"superblock of format version {sb['version']}")
    if sb["kind"] not in KINDS:
        raise CorruptBlock(addr, f"unknown disk kind {sb['kind']!r}")
    check_entry(addr, sb["root"])
    _check_geometry(addr, sb)
    return sb


def _check_geometry(addr, sb):
    """The numbers of a superblock must describe a disk this format can lay out (a checksum
    that matches by chance, or a writer's bug, must not send the allocator astray)."""
    def bad(why):
        raise CorruptBlock(addr, f"superblock {why}")
    ints = ("bsize", "nblocks", "marks", "era", "nextpath")
    if not all(isinstance(sb[f], int) and not isinstance(sb[f], bool) for f in ints):
        bad("fields are not integers")
    try:
        check_bsize(sb["bsize"])
    except ValueError as e:
        bad(str(e))
    nblocks, marks = sb["nblocks"], sb["marks"]
    want = 0 if sb["kind"] == "worm" else -(-nblocks // (payload_capacity(sb["bsize"]) * 8))
    if nblocks < 18 or marks != want:
        bad(f"geometry: {nblocks} blocks, {marks} mark blocks per area")
    start = 2 + 2 * marks
    cur = sb["cursor"]
    if (not isinstance(cur, list) or len(cur) != 2 or not all(isinstance(x, int) for x in cur)
            or not start <= cur[0] < nblocks or not 0 <= cur[1] <= nblocks - start):
        bad(f"log cursor {cur!r:.40}")
    sw = sb["sweep"]
    if sw is not None and (not isinstance(sw, list) or len(sw) != 3 or sw[0] not in (0, 1)
                           or not all(isinstance(x, int) for x in sw) or not marks):
        bad(f"sweep record {sw!r:.40}")
    if sb["era"] < 0 or sb["nextpath"] < 2:
        bad("era or next qid path out of range")


def read_super_pair(read_bytes):
    """Return (newest valid superblock, reasons the other copy was rejected); NotCreepy if
    neither copy is valid.  See read_super_copies."""
    copies, errors = read_super_copies(read_bytes)
    return copies[0], errors


def read_super_copies(read_bytes):
    """Return ([valid superblocks, newest first], [why each other copy was rejected]).

    read_bytes(offset, n) reads raw bytes from the disk.  Copy A sits at offset 0 and tells the
    block size; if it is damaged every legal block size is tried for copy B.  A copy must sit in
    the slot its era names (era % 2), so a stray old copy is never mistaken for a new one.  A
    rejected copy whose header is still readable says which era it claims ("claims era N"), so
    a caller can tell a damaged newest commit from a damaged older one.  NotCreepy if neither
    copy is valid."""
    errors, found = [], []
    legal = [1 << k for k in range(10, 17)]
    raw = read_bytes(0, MAX_BSIZE)
    why = None
    for bs in legal:                # the checksum covers the whole block: find its size
        try:
            _, _, payload = decode_block(raw[:bs], 0, SUPER)
            sb = decode_super(0, payload)
            if sb["bsize"] != bs:
                raise CorruptBlock(0, "copy A does not match its size")
            if sb["era"] % 2 != 0:
                raise CorruptBlock(0, f"copy A holds odd era {sb['era']}")
            found.append(sb)
            break
        except CorruptBlock as e:
            why = why if why and "checksum" not in why else str(e)
    if found:
        sizes = [found[0]["bsize"]]
    else:
        errors.append(f"copy A: {why}{_claims(raw)}")
        sizes = legal
    for bs in sizes:
        raw = read_bytes(bs, bs)
        if raw[:2] != MAGIC:
            if len(sizes) == 1:
                errors.append(f"copy B: block 1 "
                              f"{'never written' if not any(raw[:32]) else 'bad magic'}")
            continue
        try:
            _, _, payload = decode_block(raw, 1, SUPER)
            sb = decode_super(1, payload)
            if sb["bsize"] != bs or sb["era"] % 2 != 1:
                raise CorruptBlock(1, "copy B does not match its slot")
            found.append(sb)
            break
        except CorruptBlock as e:
            errors.append(f"copy B: {e}{_claims(raw)}")
    if not found:
        raise NotCreepy("no valid creepy superblock" + (f" ({'; '.join(errors)})" if errors else ""))
    found.sort(key=lambda s: s["era"], reverse=True)
    return found, errors


def _claims(raw):
    """ '; it claims era N' when raw starts with a readable superblock header."""
    if len(raw) < HEADER_SIZE:
        return ""
    magic, btype, _, _, _, era, _ = HEADER.unpack_from(raw)
    return f"; it claims era {era}" if magic == MAGIC and btype == SUPER else ""


def claimed_era(why):
    """The era a rejected copy claims (from read_super_copies' reason), or None."""
    k = why.rfind("claims era ")
    return int(why[k + 11:]) if k >= 0 else None


def now_ns():
    return time.time_ns()
