"""Requests abandoned mid-way, on the real server: a client flushes (Tflush), or hangs up, while a
request that can wait is under way: the no-change Twstat that asks for a commit, a write or a
create waiting for room on a nearly full disk (a sweep, a commit, another sweep), a read.  The
delays vary, so the abandonment lands before, during and after the freeze and the write, and
the disk is small enough that sweeps run all along.  After each try the committed era /stats
reports must be the newest superblock's, no block may be corrupt, and check must pass.

Reproduce: CREEPY_CANCEL_SEED=<seed> CREEPY_CANCEL_TRIES=<n> python -m pytest tests/test_cancel.py
"""

import asyncio
import os
import random
import re

from creepy.check import check_disk
from creepy.ninep.client import Client, Error9P, nochange
from creepy.ninep.codec import OREAD, ORDWR, OTRUNC
from creepy.store.disk import Disk
from creepy.store.format import read_super_pair
from servers import Server9pix

SEED = int(os.environ.get("CREEPY_CANCEL_SEED", "5"))
TRIES = int(os.environ.get("CREEPY_CANCEL_TRIES", "240"))


def stats_numbers(text):
    committed = int(re.search(r"^era:\t\d+ \(committed (\d+)\)", text, re.M).group(1))
    sweeps = int(re.search(r"^sweeps:\t(\d+)", text, re.M).group(1))
    corrupt = int(re.search(r" (\d+) corrupt", text).group(1))
    return committed, sweeps, corrupt


def disk_era(path):
    d = Disk(path, readonly=True)
    try:
        return read_super_pair(d.pread)[0]["era"]
    finally:
        d.close()


async def open_file(c, name, mode, create=False):
    fid = await c.walkpath("")
    try:
        if create:
            await c.create(fid, name, 0o644, mode)
        else:
            await c.walk(fid, fid, [name])
            await c.open(fid, mode)
    except BaseException:
        await c.clunk(fid)
        raise
    return fid


async def request(c, kind, rng, names):
    """Start one request that can wait; returns the coroutine (not started)."""
    if kind == "sync":
        fid = await c.walkpath(rng.choice(names) if names else "")
        async def go():
            try:
                await c.wstat(fid, nochange())
            finally:
                await c.clunk(fid)
        return go()
    if kind == "write":
        name = rng.choice(names)
        fid = await open_file(c, name, ORDWR)
        data = rng.randbytes(rng.choice((1000, 30_000, 120_000)))
        async def go():
            try:
                await c.write(fid, rng.randrange(0, 100_000), data)
            finally:
                await c.clunk(fid)
        return go()
    if kind == "create":
        name = f"c{rng.randrange(10**6)}"
        async def go():
            fid = await open_file(c, name, ORDWR | OTRUNC, create=True)
            try:
                await c.write(fid, 0, rng.randbytes(rng.randrange(1, 60_000)))
            finally:
                await c.clunk(fid)
        return go()
    name = rng.choice(names)
    fid = await open_file(c, name, OREAD)
    async def go():
        try:
            await c.read(fid, rng.randrange(0, 50_000), 100_000)
        finally:
            await c.clunk(fid)
    return go()


async def churn(c, rng, names, known):
    """Fill the disk and free it again, so the log keeps going round; known: name -> bytes of
    the files whose contents are certain."""
    for _ in range(rng.randrange(1, 4)):
        if names and (rng.random() < 0.4 or len(names) > 40):
            name = names.pop(rng.randrange(len(names)))
            known.pop(name, None)
            try:
                await c.remove_path(name)
            except Error9P:
                pass
        else:
            name = f"f{rng.randrange(10**6)}"
            data = rng.randbytes(rng.randrange(1000, 90_000))
            try:
                await c.write_file(name, data)
                names.append(name)
                known[name] = data
            except Error9P as e:
                assert e.ename == "file system full", e.ename


async def settled(admin, path):
    """The committed era /stats reports, once it equals the disk's newest superblock (a commit
    in flight makes them differ until its last fsync returns, which on a busy machine may take
    seconds; a lost one makes them differ forever)."""
    for _ in range(3000):
        committed, sweeps, corrupt = stats_numbers((await admin.read_file("stats")).decode())
        on_disk = disk_era(path)
        if committed == on_disk:
            break
        await asyncio.sleep(0.01)
    return committed, on_disk, sweeps, corrupt


async def tries(srv, seed, n):
    rng = random.Random(seed)
    c = await Client.connect(srv.tcp_dial, aname="")
    admin = await Client.connect(srv.tcp_dial, aname="main")
    names, known = [], {}
    flushed = hung = 0
    for t in range(n):
        await churn(c, rng, names, known)
        kind = rng.choice(("sync", "sync", "write", "create", "read")) if names else "sync"
        hangup = rng.random() < 0.4
        delay = rng.choice((0, 0, 0.0002, 0.001, 0.003, 0.01, 0.03))
        peer = await Client.connect(srv.tcp_dial, aname="") if hangup else c
        try:
            coro = await request(peer, kind, rng, names)
        except Error9P:
            if hangup:
                await peer.close()
            continue
        if kind == "write":
            known.clear()           # which file it hit and whether it happened is unknown
        task = asyncio.get_running_loop().create_task(coro)
        await asyncio.sleep(delay)
        if hangup:
            peer._transport.abort()         # gone, with the request in flight
            hung += 1
        else:
            task.cancel()                   # our client sends Tflush for it
            flushed += 1
        try:
            await task
        except (asyncio.CancelledError, Error9P, ConnectionError):
            pass
        if hangup:
            await peer.close()
        # More churn first: a write that finds the log short sweeps, which must not sweep
        # from a commit older than the one on the disk.
        await churn(c, rng, names, known)
        committed, on_disk, sweeps, corrupt = await settled(admin, srv.disk)
        what = f"seed {seed} try {t} ({kind}, {'hang-up' if hangup else 'flush'} after {delay}s)"
        assert corrupt == 0, f"{what}: corrupt blocks read"
        assert committed == on_disk, \
            f"{what}: /stats says committed {committed}, the disk {on_disk}\n" \
            f"{(await admin.read_file('stats')).decode()}"
        for name, data in known.items():
            assert await c.read_file(name) == data, f"{what}: {name} changed"
        if t % 40 == 39:
            reply = await admin.cons("sync", timeout=30)
            assert "internal error" not in reply, reply
            rep = check_disk(srv.disk)
            assert rep.errors == [], f"{what}: {rep.errors[:3]}"
    await c.close()
    await admin.close()
    return flushed, hung, sweeps


def test_flushed_and_abandoned_requests_never_lose_a_commit(tmp_path):
    srv = Server9pix(tmp_path, size="3M", bsize="1K", extra=["-c", "1"])
    srv.start()
    try:
        flushed, hung, sweeps = asyncio.run(tries(srv, SEED, TRIES))
    finally:
        srv.stop()
    print(f"{flushed} flushed, {hung} hung up, {sweeps} sweeps")
    assert flushed + hung >= 200 and sweeps >= 5, (flushed, hung, sweeps)
    rep = check_disk(srv.disk)
    assert rep.errors == [], rep.errors[:3]
    assert "Traceback" not in srv.stderr and "internal error" not in srv.stderr, srv.stderr
