"""Storage at scale on the tiny profile: 1 KiB blocks, a 2 MiB disk, a 256 KiB cache, so that
deep indirection, eviction, sweeping and a full disk all happen in seconds."""

import os
import random

import pytest

from creepy.check import check_disk
from creepy.errors import DiskFull
from creepy.store.disk import Disk, RecordingDisk
from creepy.store import sweep as sweepmod
from creepy.store.store import Store
from crashsim import build_image, fsync_points, open_image, superblock_eras_written, torn_extras
from storemodel import Model, Workload, compare, resolve

TINY = dict(bsize=1024, size=2 << 20, cache=256 << 10)


def tiny_disk(tmp_path, name="disk"):
    path = str(tmp_path / name)
    d = Disk.create(path, TINY["size"])
    Store.format(d, owner="u", bsize=TINY["bsize"])
    d.close()
    return path


def relieve(st, m, rng):
    """Remove files at random until the pending changes fit; True if anything went."""
    files = m.regular()
    rng.shuffle(files)
    for p in files[:max(1, len(files) // 4)]:
        st.unlink(resolve(st, p), "u", 1)
        del m.files[p]
    return bool(files)


def churn(st, m, seed, syncs, on_commit=None, steps=25):
    """Run the workload, syncing every `steps` operations; a full disk makes it remove files.
    Returns the number of disk-full events."""
    rng = random.Random(seed)
    w = Workload(seed, st, m, max_write=8000, max_offset=24000)
    fulls = 0
    for _ in range(syncs):
        for _ in range(steps):
            w.step()
        while True:
            try:
                st.sync_now()
                break
            except DiskFull:
                fulls += 1
                if not relieve(st, m, rng):
                    raise
                try:
                    st.sync_now(use_reserve=True)
                    break
                except DiskFull:
                    continue
        if on_commit:
            on_commit(st, m)
    return fulls


@pytest.mark.parametrize("seed", [1, 2])
def test_disk_fills_and_is_swept_while_the_tree_matches_the_model(tmp_path, seed):
    path = tiny_disk(tmp_path)
    st = Store.open(Disk(path), cache_bytes=TINY["cache"])
    m = Model()
    checks = []

    def after(st, m):
        diffs = compare(st, m)
        assert diffs == [], f"seed {seed}: {diffs[:3]}"
        rep = check_disk(path)
        assert rep.errors == [], f"seed {seed}: check after era {st.committed_era}: " \
                                 f"{rep.errors[:3]}"
        checks.append(rep.garbage)

    churn(st, m, seed, syncs=220, on_commit=after)
    assert st.stats["sweeps"] >= 20, st.stats
    assert st.cache.used <= TINY["cache"]
    reopened = Store.open(Disk(path), cache_bytes=TINY["cache"])
    assert compare(reopened, m) == []
    print(f"seed {seed}: {st.stats['sweeps']} sweeps, {st.stats['syncs']} syncs, "
          f"{len(checks)} checks, {st.cache.evictions} evictions")


def test_crash_points_inside_and_around_sweeps_open_to_committed_trees(tmp_path, monkeypatch):
    path = tiny_disk(tmp_path)
    with open(path, "rb") as fp:
        base = fp.read()
    rd = RecordingDisk(Disk(path))
    st = Store.open(rd, cache_bytes=TINY["cache"])
    m = Model()
    models = {st.committed_era: m.copy()}
    sweep_ops = []

    def after(st, m):
        models[st.committed_era] = m.copy()

    real_sweep = sweepmod.sweep

    def sweep(*args):
        start = len(rd.ops)
        result = real_sweep(*args)
        sweep_ops.append((start, len(rd.ops)))
        return result

    monkeypatch.setattr(sweepmod, "sweep", sweep)
    churn(st, m, 3, syncs=130, on_commit=after)
    assert len(sweep_ops) >= 3
    ops = rd.ops
    rng = random.Random(3)
    points = fsync_points(ops)
    inside = {i for i in points for a, b in sweep_ops if a <= i < b}
    chosen = sorted(set(points[::max(1, len(points) // 150)]) | inside)
    checked = 0
    durable = min(models)
    img_path = str(tmp_path / "crashed")
    for i in points:
        eras_in = superblock_eras_written(ops, i, (), 1024)
        if eras_in:
            durable = max(eras_in)
        if i not in chosen:
            continue
        for torn in (False, True):
            extra = torn_extras(ops, i, rng) if torn else []
            img = build_image(base, ops, i, extra)
            allowed = {durable} | superblock_eras_written(ops, i, extra, 1024)
            s2 = open_image(img, img_path)
            era = s2.committed_era
            assert era in allowed and era >= durable, (i, era, allowed)
            diffs = compare(s2, models[era])
            s2.close()
            assert diffs == [], f"fsync op {i} torn={torn} era {era}: {diffs[:3]}"
            assert check_disk(img_path).errors == []
            checked += 1
    assert checked >= 200
    assert any(i in inside for i in chosen)
    print(f"{checked} crash points, {len(inside)} fsyncs inside {len(sweep_ops)} sweeps")


def test_corrupt_blocks_are_reported_by_check_and_refused_by_reads(tmp_path):
    path = tiny_disk(tmp_path)
    st = Store.open(Disk(path))
    m = Model()
    churn(st, m, 9, syncs=12)
    # Every committed block, with the file it belongs to.
    from creepy.store.sweep import TreeReader, entry_root, walk
    reader = TreeReader(Disk(path, readonly=True), 1024, st.committed_era)
    owner = {}

    def visit(addr, era, btype, via, ctx):
        owner.setdefault(addr, ctx)
        return True

    walk(reader, [(entry_root(st.committed["root"]), "")], visit)
    rng = random.Random(9)
    victims = rng.sample(sorted(owner), 50)
    reported = 0
    for addr in victims:
        fd = os.open(path, os.O_RDWR)
        off = addr * 1024 + rng.randrange(0, 1024)
        old = os.pread(fd, 1, off)
        os.pwrite(fd, bytes([old[0] ^ 0x5A]), off)
        os.close(fd)
        try:
            rep = check_disk(path)
            named = [e for e in rep.errors if e[0] == addr]
            assert named, f"block {addr}: check reported {rep.errors[:3]}"
            reported += 1
            # A fresh server answers reads of the damaged file with an error, and the rest of
            # the tree reads as before.
            s2 = Store.open(Disk(path))
            bad_path = tuple(x for x in owner[addr].split("/") if x)
            for p, want in m.files.items():
                if p == () or not isinstance(want, bytes):
                    continue
                try:
                    n = resolve(s2, p)
                    got = s2.read(n, 0, n.length + 1) if n else None
                except Exception as e:
                    assert "corrupt block" in str(e)
                    assert p[:len(bad_path)] == bad_path or bad_path[:len(p)] == p \
                        or len(bad_path) < len(p), (p, bad_path, e)
                    continue
                if p[:len(bad_path)] != bad_path:
                    assert got == want, p
        finally:
            fd = os.open(path, os.O_RDWR)
            os.pwrite(fd, old, off)
            os.close(fd)
    assert reported == 50
    assert check_disk(path).errors == []
