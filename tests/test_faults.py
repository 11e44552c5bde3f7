"""Failure injection on the production path: the committer's asynchronous programs (sync,
make_room, sweep) run on their writer thread over a disk that fails a chosen write or fsync
with EIO or ENOSPC, under a seeded workload on the tiny profile, and callers give up waiting
at random moments (as a flushed request or a client that hangs up does).  After every injected
failure: forced sweeps, a restart from the disk, the tree compared with the model of the newest
recorded commit, and creepy check.  Nothing recorded may be lost and check must find nothing.

Reproduce: CREEPY_FAULT_SEEDS=<seed> CREEPY_FAULT_TRIES=<n> python -m pytest tests/test_faults.py
"""

import asyncio
import errno
import os
import random

import pytest

from creepy.check import check_disk
from creepy.errors import DiskFull, FsError
from creepy.store.disk import Disk
from creepy.store.format import read_super_pair
from creepy.store.store import Store
from faultdisk import FaultyDisk
from storemodel import Model, Workload, compare, resolve
from test_sweep import TINY, relieve, tiny_disk

SEEDS = [int(s) for s in os.environ.get("CREEPY_FAULT_SEEDS", "1,2,3").split(",")]
TRIES = int(os.environ.get("CREEPY_FAULT_TRIES", "200"))
#: blocks one workload step may melt at most (8 KiB of data and the paths above it)
STEP_BLOCKS = 40


async def admitted_step(st, m, w, rng):
    """One workload step, admitted as the tree layer admits changes: while the next commit and
    a step's worth of blocks fit outside the reserve; on a full disk only a remove, once the
    reserve has room for its commit (the committer sweeps and commits to make room)."""
    if not st.short(more=STEP_BLOCKS) or await st.make_room(STEP_BLOCKS):
        w.step()
        return
    files = m.regular()
    if files:
        p = rng.choice(files)
        if st.short(True, 4 * (len(p) + 1)):
            await st.make_room(4 * (len(p) + 1), use_reserve=True)
        st.unlink(resolve(st, p), "u", 1)
        del m.files[p]


async def commit_with_room(st, m, rng):
    """Sync; on a full disk (the reserve holds the commit of the removes admitted), remove
    files one by one, as the tree layer would have, until the commit fits."""
    for _ in range(400):
        for use_reserve in (False, True):
            try:
                return await st.sync(use_reserve=use_reserve)
            except DiskFull:
                pass
        files = m.regular()
        if not files:
            break
        p = rng.choice(files)
        st.unlink(resolve(st, p), "u", 1)
        del m.files[p]
    raise AssertionError(f"the disk stayed full: {st.log.avail} free, {st.need_blocks()} "
                         f"needed, {len(m.regular())} files, {len(m.dirs())} directories")


async def abandon(coro, rng):
    """Start coro as a request would and, half of the time, stop waiting for it at a random
    moment (Tflush, a hang-up).  Returns (finished, exception or None)."""
    task = asyncio.get_running_loop().create_task(coro)
    if rng.random() < 0.5:
        await asyncio.sleep(rng.choice((0, 0, 0.0005, 0.002, 0.01)))
        task.cancel()
    try:
        await task
        return True, None
    except asyncio.CancelledError:
        return False, None
    except (FsError, DiskFull) as e:
        return True, e


async def run(path, seed, tries):
    rng = random.Random(seed)
    fd = FaultyDisk(Disk(path), seed)
    st = Store.open(fd, cache_bytes=TINY["cache"])
    m = Model()
    models = {st.committed_era: m.copy()}
    w = Workload(seed, st, m, max_write=8000, max_offset=24000)
    injected = abandoned = failures = 0
    for t in range(tries):
        for _ in range(rng.randrange(3, 25)):
            await admitted_step(st, m, w, rng)
        models[st.era] = m.copy()               # what the next freeze commits
        fd.arm(rng.randrange(0, 6), rng.choice((errno.EIO, errno.ENOSPC)),
               rng.choice((("w", "f"), ("f",), ("w",))))
        program = rng.choice(("sync", "sync", "room", "sweep"))
        if program == "sync":
            done, exc = await abandon(st.sync(), rng)
        elif program == "room":
            done, exc = await abandon(st.make_room(rng.randrange(0, 200)), rng)
        else:
            done, exc = await abandon(st.sweep(), rng)
        abandoned += not done
        if isinstance(exc, DiskFull):
            relieve(st, m, rng)
        elif exc is not None:
            failures += 1
        # Sweeps forced while the disk may still fail: each retries a failed commit first.
        for _ in range(rng.randrange(1, 3)):
            if rng.random() < 0.5:
                fd.arm(rng.randrange(0, 4), rng.choice((errno.EIO, errno.ENOSPC)))
            await abandon(st.sweep(), rng)
        await st.committer.drain()
        fd.disarm()
        # The committer must have recorded whatever the writer made durable.
        c = st.committer
        assert c.durable_era in (c.committed_era, getattr(c.failed, "era", None)), \
            (seed, t, c.durable_era, c.committed_era)
        assert c.why is None, f"seed {seed} try {t}: the committer stopped: {c.why}"
        models[st.era] = m.copy()
        await commit_with_room(st, m, rng)
        models[st.committed_era] = m.copy()
        await st.sweep()
        assert st.committer.failed is None and not st.pending
        injected = fd.injected
        # Restart from the disk: the newest recorded commit, whole.
        recorded = st.committed_era
        st.close()
        fd.close()
        d = Disk(path, readonly=True)
        sb, _ = read_super_pair(d.pread)
        d.close()
        assert sb["era"] == recorded, f"seed {seed} try {t}: lost commit {recorded}, disk has " \
                                      f"{sb['era']}"
        rep = check_disk(path)
        assert rep.errors == [], f"seed {seed} try {t}: check: {rep.errors[:3]}"
        fd = FaultyDisk(Disk(path), seed * 1000 + t)
        st = Store.open(fd, cache_bytes=TINY["cache"])
        diffs = compare(st, models[recorded])
        assert diffs == [], f"seed {seed} try {t}: {diffs[:3]}"
        fd.injected = injected
        w.store = st
    st.close()
    return injected, abandoned, failures, st.stats


@pytest.mark.parametrize("seed", SEEDS)
def test_injected_write_and_fsync_failures_lose_no_commit(tmp_path, seed):
    path = tiny_disk(tmp_path)
    injected, abandoned, failures, stats = asyncio.run(run(path, seed, TRIES))
    print(f"seed {seed}: {injected} failures injected, {failures} seen by callers, "
          f"{abandoned} programs abandoned by their callers")
    assert injected >= TRIES * 3 // 4, "too few failures were injected to mean anything"
    assert abandoned > 0
