import os

import pytest

from creepy import errors as E
from creepy.errors import CorruptBlock, NotCreepy
from creepy.ninep.codec import FrameBuffer
from creepy.store import content, dirtree
from creepy.store.disk import Disk, RecordingDisk
from creepy.store.format import DMDIR, read_super_pair
from creepy.store.store import Store
from storemodel import Model, Workload, compare, resolve


def fresh(tmp_path, size=64 << 20, bsize=4096, kind="main"):
    path = str(tmp_path / "disk")
    d = Disk.create(path, size)
    Store.format(d, kind=kind, owner="u", bsize=bsize)
    return path, Store.open(d)


def reopen(path):
    return Store.open(Disk(path))


@pytest.mark.parametrize("seed", range(6))
def test_random_workload_matches_model_across_syncs_and_reopens(tmp_path, seed):
    path, st = fresh(tmp_path, bsize=1024 if seed % 2 else 4096)
    m = Model()
    w = Workload(seed, st, m)
    for rnd in range(8):
        for _ in range(60):
            w.step()
        assert compare(st, m) == [], f"seed {seed} round {rnd} (in memory)"
        st.sync_now()
        st2 = reopen(path)
        assert compare(st2, m) == [], f"seed {seed} round {rnd}: reproduce with seed={seed}"
        # keep working on the reopened store half of the time
        if rnd % 2:
            st = st2
            w.store = st


def test_unsynced_changes_are_not_on_disk(tmp_path):
    path, st = fresh(tmp_path)
    f = st.create(st.root, "a", 0o644, "u", "u", 1)
    st.write(f, 0, b"committed")
    st.changed(f)
    st.sync_now()
    st.write(f, 0, b"COMMITTED and more")
    st.changed(f)
    st.create(st.root, "b", 0o644, "u", "u", 2)
    st2 = reopen(path)
    assert [n for n, _ in st2.dirents(st2.root)] == ["a"]
    assert st2.read(resolve(st2, ("a",)), 0, 100) == b"committed"


def test_large_directory_splits_into_many_leaves_and_stays_sorted(tmp_path):
    path, st = fresh(tmp_path, bsize=1024)
    d = st.create(st.root, "big", DMDIR | 0o755, "u", "u", 1)
    names = [f"file{i:05d}" for i in range(3000)]
    for i, nm in enumerate(reversed(names)):
        st.create(d, nm, 0o644, "u", "u", 1)
        if i % 700 == 0:
            st.sync_now()
    st.sync_now()
    st2 = reopen(path)
    d2 = resolve(st2, ("big",))
    assert d2.dir.depth >= 2
    assert [n for n, _ in st2.dirents(d2)] == names
    assert [n for n, _ in st2.dirents(d2, after="file02990")] == names[2991:]
    for nm in names[::3]:
        st2.unlink(st2.lookup(d2, nm), "u", 2)
    st2.sync_now()
    st3 = reopen(path)
    assert [n for n, _ in st3.dirents(resolve(st3, ("big",)))] == [
        nm for i, nm in enumerate(names) if i % 3]


def test_file_grows_through_indirection_and_holes_read_as_zeros(tmp_path):
    path, st = fresh(tmp_path, bsize=1024)
    f = st.create(st.root, "sparse", 0o644, "u", "u", 1)
    far = st.cap * st.fanout * st.fanout + 17        # needs depth 3
    st.write(f, far, b"tail")
    st.write(f, 5, b"head")
    st.changed(f)
    assert f.data.depth == 3
    st.sync_now()
    st2 = reopen(path)
    g = resolve(st2, ("sparse",))
    assert g.length == far + 4
    assert st2.read(g, 0, 9) == b"\0" * 5 + b"head"
    assert st2.read(g, far - 3, 10) == b"\0\0\0tail"
    assert st2.read(g, st.cap * 50, 100) == bytes(100)


def test_truncate_zeroes_the_tail_so_extension_reads_zeros(tmp_path):
    path, st = fresh(tmp_path, bsize=1024)
    f = st.create(st.root, "t", 0o644, "u", "u", 1)
    st.write(f, 0, b"x" * 5000)
    st.changed(f)
    st.sync_now()
    st.truncate(f, 1500)
    st.truncate(f, 5000)
    st.changed(f)
    assert st.read(f, 0, 5000) == b"x" * 1500 + bytes(3500)
    st.sync_now()
    assert reopen(path).read(resolve(reopen(path), ("t",)), 0, 5000) == b"x" * 1500 + bytes(3500)


def test_a_small_file_holds_its_length_in_memory_not_a_block(tmp_path):
    # 200 files of 1 KiB on 16 KiB blocks: each melted block holds 1 KiB, and dirty_bytes
    # (what the tree layer's dirty limit compares) counts that, not 200 blocks.
    path, st = fresh(tmp_path, bsize=16384)
    small = bytes(range(256)) * 4
    files = []
    for i in range(200):
        f = st.create(st.root, f"f{i}", 0o644, "u", "u", i + 1)
        st.write(f, 0, small)
        st.changed(f)
        files.append(f)
    assert all(len(f.data.root) == len(small) for f in files)
    assert st.dirty_bytes() < 200 * (len(small) + 2 * st.MELTED_OVERHEAD) + 4 * st.bsize
    assert st.dirty_bytes() < 200 * st.bsize // 8
    # settle counts the same way, exactly
    before = st.dirty_bytes()
    st.settle()
    assert 0 < st.dirty_bytes() <= before
    # freeze pads each block to the whole block the disk holds: a file grown after the
    # commit reads zeros past its old end, from the block still waiting in memory and from
    # the disk
    st.sync_now()
    assert len(st.load_data(files[0].data.root)) == st.cap
    st.truncate(files[0], 3 * len(small))
    st.changed(files[0])
    want = small + bytes(2 * len(small))
    assert st.read(files[0], 0, 10 * len(small)) == want
    st.sync_now()
    st2 = reopen(path)
    assert st2.read(resolve(st2, ("f0",)), 0, 10 * len(small)) == want
    assert st2.read(resolve(st2, ("f199",)), 0, 10 * len(small)) == small


def test_a_short_block_reads_zeros_past_its_end_through_writes_and_truncates(tmp_path):
    path, st = fresh(tmp_path, bsize=4096)
    cap = st.cap
    f = st.create(st.root, "s", 0o644, "u", "u", 1)
    st.write(f, 10, b"abc")                 # a hole before it: the block holds 13 bytes
    st.changed(f)
    assert len(f.data.root) == 13
    st.write(f, 100, b"xyz")                # past the block's end: zeros between
    st.changed(f)
    assert len(f.data.root) == 103
    assert st.read(f, 0, 200) == bytes(10) + b"abc" + bytes(87) + b"xyz"
    st.truncate(f, 12)                      # drops what it need not hold
    assert len(f.data.root) == 12
    st.truncate(f, cap)
    st.changed(f)
    assert st.read(f, 0, cap) == bytes(10) + b"ab" + bytes(cap - 12)
    grown = st.dirty_bytes()
    st.write(f, cap - 1, b"z")              # the last byte of the block: it grows to cap
    st.changed(f)
    assert len(f.data.root) == cap and st.dirty_bytes() == grown + cap - 12
    st.sync_now()
    assert reopen(path).read(resolve(reopen(path), ("s",)), 0, cap) == (
        bytes(10) + b"ab" + bytes(cap - 13) + b"z")


@pytest.mark.parametrize("seed", range(4))
def test_dirty_memory_counted_as_blocks_melt_equals_a_recount(tmp_path, seed):
    # nmelted and melted_bytes are kept up as blocks melt, grow and are kept (content.py);
    # content.melted recounts a file's from its tree (as settle does).  Without truncates
    # nothing melted is ever dropped, so the two agree exactly; with truncates the running
    # count may only be above (an upper bound).  Writes: kept frames and copies, small and 1 MiB, over
    # holes, short blocks, kept blocks and blocks frozen by a sync.
    import random
    rnd = random.Random(seed)
    path, st = fresh(tmp_path, size=256 << 20, bsize=4096)
    cap = st.cap
    files = [st.create(st.root, f"f{i}", 0o644, "u", "u", i + 1) for i in range(3)]
    for f in files:
        st.changed(f)
    for step in range(300):
        f = rnd.choice(files)
        size = rnd.choice([1, 100, cap - 1, cap, cap + 1, 5 * cap, 70 * cap + 3])
        off = rnd.choice([0, rnd.randrange(0, 80 * cap), rnd.randrange(0, 80) * cap])
        data = FrameBuffer(os.urandom(size))
        truncating = seed >= 2 and rnd.random() < 0.1
        if truncating:
            st.truncate(f, rnd.randrange(0, 80 * cap))
        else:
            st.write(f, off, memoryview(data).toreadonly(), keep=rnd.random() < 0.5)
        st.changed(f)
        if rnd.random() < 0.05:
            st.sync_now()
        if step % 10 == 0 or step == 299:
            # what the store counted for file blocks (directory blocks count whole)...
            counted = (st.nmelted - st.nmelted_dir,
                       st.melted_bytes - st.nmelted_dir * st.bsize)
            # ... against what the files hold
            exact = tuple(map(sum, zip(*(content.melted(st, g.data) for g in files))))
            if seed < 2:
                assert counted == exact, f"step {step}"
            else:
                assert counted[0] >= exact[0] and counted[1] >= exact[1], f"step {step}"


def test_the_quick_bound_on_a_freeze_covers_the_directories_it_rewrites(tmp_path):
    # One byte changed in each of 200 files, each in a directory of its own, after a sync:
    # 200 melted blocks, but the freeze also rewrites each directory's leaf and the root's
    # leaves, over twice as many.  need_blocks(), what a write checks the free space
    # against before it is let in (commit.short), must not be below what the freeze writes.
    path, st = fresh(tmp_path, bsize=4096)
    files = []
    for i in range(200):
        d = st.create(st.root, f"d{i}", DMDIR | 0o755, "u", "u", 1)
        f = st.create(d, "f", 0o644, "u", "u", 1)
        st.write(f, 0, b"x")
        st.changed(f)
        files.append(f)
    st.sync_now()
    for f in files:
        st.write(f, 0, b"y")
        st.changed(f)
    quick = st.need_blocks()
    written = st.stats["blocks_written"]
    st.sync_now()
    written = st.stats["blocks_written"] - written - 1             # less the superblock
    assert written > 2 * len(files) and quick >= written
    st.write(files[0], 0, b"z")
    st.changed(files[0])
    st.settle()                         # exact: what the next freeze writes
    exact = st.need_blocks()
    written = st.stats["blocks_written"]
    st.sync_now()
    assert st.stats["blocks_written"] - written == exact + 1       # and the superblock


def test_the_quick_bound_stays_near_the_freeze_for_files_created(tmp_path):
    # A create puts the new entry into its directory at once (the leaves it melts are
    # counted as they melt), so the quick bound must not count those puts again: 3,000
    # creates counted as 3,000 leaf paths made it several times the freeze, and past the
    # free space a settle (a walk of the whole dirty tree) ran in the middle of a create.
    path, st = fresh(tmp_path, size=256 << 20, bsize=4096)
    d = st.create(st.root, "cr", DMDIR | 0o755, "u", "u", 1)
    st.sync_now()
    for i in range(3000):
        f = st.create(d, f"file{i:05}", 0o644, "u", "u", 1)
        st.write(f, 0, b"x")
        st.changed(f)
    quick = st.need_blocks()
    st.settle()
    exact = st.need_blocks()
    assert exact <= quick <= 2 * exact + 16, (quick, exact)


def test_frozen_blocks_are_never_rewritten(tmp_path):
    """Invariant 2 and 3: no commit writes an address that an earlier commit wrote (before a
    sweep frees anything), seen from the disk's side: every write is recorded."""
    path, st = fresh(tmp_path, bsize=1024)
    st.close()
    rd = RecordingDisk(Disk(path))
    st = Store.open(rd)
    m = Model()
    w = Workload(7, st, m)
    written = set()
    for _ in range(10):
        for _ in range(40):
            w.step()
        rd.ops.clear()
        st.sync_now()
        addrs = {op[1] // 1024 for op in rd.ops if op[0] == "w" and op[1] >= 2 * 1024}
        assert addrs, "the commit wrote no block"
        assert not addrs & written, "a commit rewrote a frozen block"
        assert all(a >= st.log.start for a in addrs)
        written |= addrs
    assert st.stats["sweeps"] == 0


def test_every_block_read_is_verified(tmp_path):
    """Invariant 4: a flipped byte in a block is reported with its address, never returned."""
    path, st = fresh(tmp_path, bsize=1024)
    f = st.create(st.root, "f", 0o644, "u", "u", 1)
    st.write(f, 0, b"A" * 3000)
    st.changed(f)
    st.sync_now()
    st2 = reopen(path)
    g = resolve(st2, ("f",))
    addr = g.data.root[0]   # the pointer block
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, b"\xff", addr * 1024 + 40)
    os.close(fd)
    with pytest.raises(CorruptBlock) as e:
        st2.read(g, 0, 10)
    assert e.value.addr == addr and str(addr) in str(e.value) and e.value.ename == E.EIO


def test_torn_superblock_falls_back_to_the_previous_commit(tmp_path):
    path, st = fresh(tmp_path)
    f = st.create(st.root, "one", 0o644, "u", "u", 1)
    st.sync_now()
    era1 = st.committed_era
    st.create(st.root, "two", 0o644, "u", "u", 2)
    st.sync_now()
    fd = os.open(path, os.O_RDWR)
    slot = st.committed_era % 2
    os.pwrite(fd, b"\0" * 100, slot * 4096 + 50)   # tear the newest copy
    os.close(fd)
    st2 = reopen(path)
    assert st2.committed_era == era1
    assert [n for n, _ in st2.dirents(st2.root)] == ["one"]
    assert f is not None


def test_open_refuses_a_disk_that_is_not_creepy(tmp_path):
    path = str(tmp_path / "junk")
    with open(path, "wb") as fp:
        fp.write(os.urandom(1 << 20))
    with pytest.raises(NotCreepy):
        read_super_pair(Disk(path).pread)


def test_eras_record_what_changed(tmp_path):
    """Invariant 6: a directory's era is the newest era below it; untouched subtrees keep
    theirs."""
    path, st = fresh(tmp_path)
    a = st.create(st.root, "a", DMDIR | 0o755, "u", "u", 1)
    b = st.create(st.root, "b", DMDIR | 0o755, "u", "u", 1)
    st.create(a, "x", 0o644, "u", "u", 1)
    st.create(b, "y", 0o644, "u", "u", 1)
    st.sync_now()
    e1 = st.committed_era
    y = st.lookup(b, "y")
    st.write(y, 0, b"new")
    st.changed(y)
    st.sync_now()
    e2 = st.committed_era
    st2 = reopen(path)
    ents = dict(st2.dirents(st2.root))
    assert ents["a"][10] == e1 and ents["b"][10] == e2
    assert st2.root.era == e2
    assert dict(st2.dirents(resolve(st2, ("a",))))["x"][10] == e1


def test_dirtree_and_content_modules_take_no_disk(tmp_path):
    """The tree modules reach the disk only through the store's loaders."""
    for mod in (content, dirtree):
        src = open(mod.__file__).read()
        assert "pread" not in src and "pwrite" not in src and "import os" not in src


def test_a_read_in_pieces_copies_melted_blocks_and_hands_out_frozen_ones(tmp_path):
    path, st = fresh(tmp_path)
    cap = st.cap
    f = st.create(st.root, "f", 0o644, "u", "u", 1)
    data = os.urandom(5 * cap + 100)
    st.write(f, 0, data)
    st.changed(f)
    st.sync_now()
    st.write(f, 2 * cap + 10, b"melted")            # block 2 melts again; 0, 1, 3... stay frozen
    st.changed(f)
    want = data[:2 * cap + 10] + b"melted" + data[2 * cap + 16:]
    pieces = st.read(f, 7, len(want), pieces=True)
    assert b"".join(pieces) == want[7:] == st.read(f, 7, len(want))
    assert [len(p) for p in pieces] == [cap - 7, cap, cap, cap, cap, 100]
    assert type(pieces[2]) is bytes                 # the melted block, copied
    # Frozen blocks are views of what the disk read brought in, one read a run of blocks,
    # never copies of it.
    runs = [memoryview(p).obj for p in pieces]
    assert runs[0] is runs[1] and runs[3] is runs[4] is runs[5]
    assert all(type(r) is bytes and len(r) > cap for r in runs[:2] + runs[3:])
    assert st.read(f, 10 * cap, 100, pieces=True) == []


def test_a_kept_write_keeps_whole_blocks_of_the_data_and_never_changes_them(tmp_path):
    path, st = fresh(tmp_path)
    cap = st.cap
    f = st.create(st.root, "f", 0o644, "u", "u", 1)
    data = FrameBuffer(os.urandom(4 * cap))        # (what a large Twrite's frame is)
    st.write(f, 10, data, keep=True)                # blocks 1 to 3 whole, 0 and 4 partial
    st.changed(f)
    slots = f.data.root.slots
    assert [type(s) for s in slots[:5]] == [bytearray, memoryview, memoryview, memoryview,
                                            bytearray]
    assert slots[1].obj is data and slots[1].readonly       # the data's own memory
    st.write(f, cap + 5, b"over")                   # into a kept block: it melts a copy
    st.changed(f)
    assert type(f.data.root.slots[1]) is bytearray
    assert data == bytes(data) and st.read(f, cap + 5, 4) == b"over"
    want = bytes(10) + data[:cap + 5 - 10] + b"over" + data[cap + 9 - 10:]
    assert st.read(f, 0, 5 * cap) == want
    assert content.melted(st, f.data)[0] == 5 + 1   # five blocks and the pointer block
    st.sync_now()
    assert reopen(path).read(resolve(reopen(path), ("f",)), 0, 5 * cap) == want


def test_a_kept_frame_counts_whole_in_dirty_bytes_until_the_commit_lets_it_go(tmp_path):
    # Frames of 64 blocks written one block apart: each write replaces all but the first
    # block the previous frame left in the tree, so every frame stays in memory for one
    # melted block.  dirty_bytes counts the frames (which is what makes the tree layer sync
    # at its dirty limit), not the 64 times fewer blocks; the commit lets them all go.
    path, st = fresh(tmp_path)
    cap = st.cap
    f = st.create(st.root, "f", 0o644, "u", "u", 1)
    size = 23 + 64 * cap
    for k in range(40):
        frame = FrameBuffer(os.urandom(size))
        st.write(f, k * cap, memoryview(frame).toreadonly()[23:], keep=True)
        st.changed(f)
    del frame
    assert st.kept_bytes == 40 * size
    assert st.dirty_bytes() == 40 * size > 4 * st.nmelted * st.bsize
    st.sync_now()
    assert st.kept_bytes == 0 and st.dirty_bytes() == 0
    # bytes cannot be watched as they die: they are copied, never kept
    st.write(f, 0, bytes(4 * cap), keep=True)
    st.changed(f)
    assert st.kept_bytes == 0
    assert [type(s) for s in f.data.root.slots[:4]] == [bytearray] * 4


def test_past_the_keep_limit_frames_are_copied(tmp_path):
    # Kept frames stop at keep_limit (the tree layer's dirty limit): whatever pins them (a
    # reply waiting to be sent, a block left of each) cannot grow the memory past it.
    path, st = fresh(tmp_path)
    cap = st.cap
    size = 23 + 8 * cap
    st.keep_limit = 3 * size
    f = st.create(st.root, "f", 0o644, "u", "u", 1)
    frames = [FrameBuffer(os.urandom(size)) for _ in range(6)]
    for k, frame in enumerate(frames):
        st.write(f, 8 * k * cap, memoryview(frame).toreadonly()[23:], keep=True)
        st.changed(f)
    assert st.kept_bytes == 3 * size
    kinds = [type(s) for s in f.data.root.slots[:48]]
    assert kinds == [memoryview] * 24 + [bytearray] * 24
    assert st.read(f, 0, 48 * cap) == b"".join(bytes(fr[23:]) for fr in frames)
