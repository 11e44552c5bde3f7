"""Sequential reads that had to go to the disk read ahead on a thread; cached reads don't."""

import asyncio

from creepy.fs.fs import Fs, OREAD
from creepy.store import content
from creepy.store.disk import Disk
from creepy.store.store import Store


def test_a_sequential_read_that_misses_brings_in_what_follows(tmp_path):
    path = str(tmp_path / "disk")
    d = Disk.create(path, 8 << 20)
    Store.format(d, owner="u", bsize=1024)

    async def main():
        st = Store.open(Disk(path))
        n = st.create(st.root, "big", 0o644, "u", "u", 1)
        data = bytes(range(256)) * 4 * 200          # 200 blocks of 1 KiB
        st.write(n, 0, data)
        st.changed(n)
        st.sync_now()
        st.cache.shrink(0)                          # nothing of it in memory
        fs = Fs(st, noauth=True, owner="u")
        f = fs.walk1(fs.attach(None, "u", ""), "big")
        fs.open(f, OREAD)
        got = fs.read(f, 0, 1000)                   # misses: read-ahead starts
        for _ in range(100):
            if not st.blocks.reading:
                break
            await asyncio.sleep(0.01)
        reads = st.stats["blocks_read"]
        off = len(got)
        while off < 8 * 992:                         # the read-ahead window (8 blocks)
            got += fs.read(f, off, 1000)
            off = len(got)
        assert got == data[:off]
        assert st.stats["blocks_read"] == reads, "read-ahead did not bring the next blocks"
        # each block it cached owns its memory: a view would keep its whole run's buffer
        for ref in content.block_refs(st, n.data, 992, 7 * 992, n.length):
            blk = st.cache.get(*ref)
            assert type(blk) is bytes and len(blk) == st.cap, type(blk)
        # all of it in memory now: a sequential read that hits starts no read-ahead
        fs.read(f, off, 500)
        assert not st.blocks.reading
        st.close()

    asyncio.run(main())
