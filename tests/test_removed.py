"""Removed files (DESIGN invariant 7): a file removed while a fid still holds it keeps its data
for that fid, counted as dirty, frozen with the tree if a sync comes meanwhile; with the last
fid its memory goes at once, not at the next sweep (a disk far from full never sweeps)."""

import asyncio
from inspect import isawaitable

from creepy.fs.fs import OREAD, ORCLOSE, ORDWR, Fs
from creepy.store import content
from creepy.store.disk import Disk
from creepy.store.store import Store

MiB = 1 << 20


def serve(tmp_path):
    d = Disk.create(str(tmp_path / "disk"), 64 * MiB)
    Store.format(d, owner="u", bsize=4096)
    st = Store.open(d, cache_bytes=16 * MiB)
    return st, Fs(st, noauth=True, owner="u", sync_interval=3600)


async def done(r):
    return await r if isawaitable(r) else r


async def made(fs, root, name, mode, data):
    f = fs.clone(root)
    await done(fs.create(f, name, 0o666, mode))
    assert await done(fs.write(f, 0, data)) == len(data)
    return f


async def opened(fs, root, name, mode):
    f = fs.walk1(root, name)
    await done(fs.open(f, mode))
    return f


async def remove(fs, f):
    """Tremove: remove, then the clunk the service layer always sends."""
    try:
        await done(fs.remove(f))
    finally:
        await done(fs.clunk(f))


def test_a_removed_file_keeps_its_data_for_the_fid_that_holds_it_and_frees_it_with_the_last(tmp_path):
    st, fs = serve(tmp_path)
    data = bytes(range(256)) * 4096

    async def main():
        root = fs.attach(None, "u", "")
        idle = st.dirty_bytes()
        f = await made(fs, root, "x", ORDWR, data)
        g = await opened(fs, root, "x", ORDWR)
        n = g.node
        await remove(fs, f)
        assert n.removed and n in st.orphans
        assert st.dirty_bytes() >= idle + len(data)         # still counted
        assert b"".join(fs.read(g, 0, len(data))) == data   # and still the file's
        assert await done(fs.write(g, len(data), b"more")) == 4
        await done(fs.clunk(g))
        assert not st.orphans
        assert content.melted(st, n.data) == (0, 0) and n.data.frozen()
        assert st.dirty_bytes() < idle + len(data) // 4

    asyncio.run(main())
    st.close()


def test_remove_on_close_frees_the_data_at_the_clunk(tmp_path):
    st, fs = serve(tmp_path)
    data = bytes(MiB)

    async def main():
        root = fs.attach(None, "u", "")
        idle = st.dirty_bytes()
        for i in range(20):                                 # 20 MiB in all, 1 MiB at a time
            f = await made(fs, root, f"t{i}", ORDWR | ORCLOSE, data)
            assert st.dirty_bytes() >= idle + len(data)
            await done(fs.clunk(f))
            assert not st.orphans and st.dirty_bytes() < idle + len(data) // 4
        assert [e.name for e, _ in fs.dirents(root, None)] == []

    asyncio.run(main())
    st.close()


def test_a_removed_file_open_across_a_sync_is_frozen_with_the_tree_then_let_go(tmp_path):
    st, fs = serve(tmp_path)
    data = bytes(range(256)) * 4096

    async def main():
        root = fs.attach(None, "u", "")
        f = await made(fs, root, "x", ORDWR, data)
        g = await opened(fs, root, "x", OREAD)
        n = g.node
        await remove(fs, f)
        await fs.sync()
        assert n in st.orphans and n.data.frozen()          # written, and no longer dirty
        assert not st.dirty
        assert b"".join(fs.read(g, 0, len(data))) == data   # read back from the disk
        await done(fs.clunk(g))
        assert not st.orphans

    asyncio.run(main())
    st.close()
