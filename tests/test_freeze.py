"""A freeze runs a slice at a time on the event loop (DESIGN invariant 5): while it is under way
reads are answered from the tree as it is, and every change (create, write, truncate by wstat or
OTRUNC, rename, remove, remove on close) waits for it to end.  The commit then holds exactly
the tree as it was when the freeze began, and the changes made meanwhile land in the next era.
Freezing also takes no stack in proportion to depth (invariant 10)."""

import asyncio
from inspect import isawaitable

import pytest

from creepy.ninep.client import nochange
from creepy.fs.fs import OREAD, ORCLOSE, ORDWR, OTRUNC, OWRITE, Fs
from creepy.store import dirtree
from creepy.store import store as storemod
from creepy.store.disk import Disk
from creepy.store.format import DMDIR
from creepy.store.store import Store
from storemodel import resolve


def fresh(tmp_path, bsize=1024, size=64 << 20):
    path = str(tmp_path / "disk")
    d = Disk.create(path, size)
    Store.format(d, owner="u", bsize=bsize)
    d.close()
    return path


def contents(st, names):
    out = {}
    for name in names:
        n = resolve(st, ("d", name))
        out[name] = None if n is None else st.read(n, 0, n.length + 1)
    return out


def test_changes_wait_for_a_freeze_and_land_in_the_next_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(storemod, "FREEZE_SLICE", 0.0)     # yield as often as it can
    monkeypatch.setattr(dirtree, "FREEZE_LEAVES", 1)
    path = fresh(tmp_path)

    async def main():
        st = Store.open(Disk(path))
        fs = Fs(st, noauth=True, owner="u")
        root = fs.attach(None, "u", "")
        d = st.create(st.root, "d", DMDIR | 0o777, "u", "u", 1)
        names = [f"f{i:04d}" for i in range(3000)]
        for i, name in enumerate(names):
            n = st.create(d, name, 0o666, "u", "u", 1)
            st.write(n, 0, name.encode() * (1 + i % 50))
            st.changed(n)
        before = contents(st, names[:40])
        dfid = fs.walk1(root, "d")

        def open_(name, mode):
            f = fs.walk1(dfid, name)
            r = fs.open(f, mode)
            return f, r

        sync = asyncio.get_running_loop().create_task(fs.sync())
        while not st.freezing:
            await asyncio.sleep(0)
        slices = 0
        waiting = []
        # Reads are answered during the freeze, from the tree as it is.
        f, r = open_(names[0], OREAD)
        assert r is None and fs.read(f, 0, 100) == before[names[0]][:100]
        fs.clunk(f)
        # Every kind of change waits.
        f, r = open_(names[1], ORDWR)
        assert r is None
        waiting.append(fs.write(f, 0, b"written during the freeze"))
        waiting.append(fs.create(fs.walk1(root, "d"), "created", 0o644, OWRITE))
        st_ = nochange()
        st_.length = 3
        waiting.append(fs.wstat(fs.walk1(dfid, names[2]), st_))
        st_ = nochange()
        st_.name = "renamed"
        waiting.append(fs.wstat(fs.walk1(dfid, names[3]), st_))
        waiting.append(fs.remove(fs.walk1(dfid, names[4])))
        g, r = open_(names[5], OWRITE | OTRUNC)
        waiting.append(r)
        h, r = open_(names[6], OREAD | ORCLOSE)
        assert r is None
        waiting.append(fs.clunk(h))
        assert all(isawaitable(w) for w in waiting), waiting
        assert st.freezing, "the freeze ended before the changes were tried: no slices"
        while st.freezing:
            slices += 1
            await asyncio.sleep(0)
        for w in waiting:
            await w
        await sync
        assert slices > 10, slices
        fs.clunk(f)
        fs.clunk(g)
        # The commit holds the tree as it was when the freeze began...
        committed = Store.open(Disk(path, readonly=True))
        assert contents(committed, names[:40]) == before
        assert resolve(committed, ("d", "created")) is None
        assert resolve(committed, ("d", "renamed")) is None
        # ...and the live tree has every change, which the next commit takes.
        now = contents(st, names[:7])
        assert now[names[1]].startswith(b"written during the freeze")
        assert now[names[2]] == before[names[2]][:3]
        assert now[names[3]] is None and resolve(st, ("d", "renamed")) is not None
        assert now[names[4]] is None and now[names[6]] is None
        assert now[names[5]] == b""
        assert resolve(st, ("d", "created")) is not None
        await fs.sync()
        again = Store.open(Disk(path, readonly=True))
        assert contents(again, names[:7]) == now
        st.close()

    asyncio.run(main())


@pytest.mark.parametrize("depth", [3000])
def test_a_deep_tree_freezes_commits_and_sweeps_without_recursion(tmp_path, depth):
    """Freeze, commit, reopen, sweep and settle a chain of directories deeper than Python's
    recursion limit, with the limit lowered so that any per-level recursion fails."""
    import sys
    path = fresh(tmp_path, size=256 << 20)
    st = Store.open(Disk(path))
    d = st.root
    for i in range(depth):
        d = st.create(d, "d", DMDIR | 0o755, "u", "u", 1)
    f = st.create(d, "leaf", 0o644, "u", "u", 1)
    st.write(f, 0, b"at the bottom")
    st.changed(f)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        st.settle()
        st.sync_now()
        st.sweep_now()
        st2 = Store.open(Disk(path))
        n = resolve(st2, ("d",) * depth + ("leaf",))
        assert st2.read(n, 0, 100) == b"at the bottom"
        st2.write(n, 0, b"AT")
        st2.changed(n)
        st2.sync_now()
        st2.trim_nodes()
    finally:
        sys.setrecursionlimit(old)
    st3 = Store.open(Disk(path))
    n = resolve(st3, ("d",) * depth + ("leaf",))
    assert st3.read(n, 0, 100) == b"AT the bottom"
