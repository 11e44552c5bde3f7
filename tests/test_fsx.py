"""fsx-style differential tests of file contents (see fsx.py): the store directly, on the tiny
profile (1 KiB blocks, so trees grow and shrink through several levels) and on the default one
(16 KiB blocks), across syncs and reopens.  The same generator runs through the real server
in test_fsx_server.py."""

import os

import pytest

from creepy.ninep.codec import FrameBuffer
from creepy.store.disk import Disk
from creepy.store.store import Store
from fsx import Fsx
from storemodel import resolve

OPS = int(os.environ.get("FSX_OPS", "0"))


class StoreFile:
    """The fsx target: one file of a store, reopened from its disk on request."""

    def __init__(self, path):
        self.path = path
        self.st = Store.open(Disk(path))
        self.n = self.st.create(self.st.root, "f", 0o644, "u", "u", 1)
        self.kept = False

    def read(self, off, count):
        return self.st.read(self.n, off, count)

    def write(self, off, data):
        # Every other write lets the store keep the data, as a large Twrite's frame is kept.
        self.kept = not self.kept
        if self.kept:
            self.st.write(self.n, off, memoryview(FrameBuffer(data)).toreadonly(), keep=True)
        else:
            self.st.write(self.n, off, data)
        self.st.changed(self.n)

    def truncate(self, length):
        self.st.truncate(self.n, length)
        self.st.changed(self.n)

    def length(self):
        return self.n.length

    def sync(self):
        self.st.sync_now()

    def reopen(self):
        self.st.sync_now()
        self.st.close()
        self.st = Store.open(Disk(self.path))
        self.n = resolve(self.st, ("f",))


def fresh(tmp_path, bsize, size):
    path = str(tmp_path / "disk")
    d = Disk.create(path, size)
    Store.format(d, owner="u", bsize=bsize)
    d.close()
    return StoreFile(path)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_fsx_tiny_profile_reads_match_the_model(tmp_path, seed):
    f = fresh(tmp_path, 1024, 64 << 20)
    seed = int(os.environ.get("FSX_SEED", seed))
    fsx = Fsx(seed, f, f.st.cap, max_len=300_000, sync_every=200, reopen_every=2000)
    fsx.run(OPS or 25_000)


@pytest.mark.parametrize("seed", [1, 2])
def test_fsx_default_profile_reads_match_the_model(tmp_path, seed):
    f = fresh(tmp_path, 16384, 256 << 20)
    seed = int(os.environ.get("FSX_SEED", seed))
    fsx = Fsx(seed, f, f.st.cap, max_len=1_200_000, sync_every=300, reopen_every=3000)
    fsx.run(OPS or 10_000)


def test_extension_of_a_one_block_file_reads_zeros(tmp_path):
    """Write 128 bytes, extend to 100000, read the start of the second block: zeros."""
    f = fresh(tmp_path, 16384, 64 << 20)
    f.write(0, b"A" * 128)
    f.truncate(100000)
    assert f.read(f.st.cap, 100) == bytes(100)
    assert f.read(0, 130) == b"A" * 128 + bytes(2)


def test_shrink_then_extend_reads_zeros_past_the_old_end(tmp_path):
    """Shrink 182993 bytes to 13401, grow to 34356: [13401, 34356) reads as zeros."""
    f = fresh(tmp_path, 16384, 64 << 20)
    data = os.urandom(182993)
    f.write(0, data)
    f.truncate(13401)
    f.truncate(34356)
    assert f.read(21552, 12804) == bytes(12804)
    assert f.read(0, 34356) == data[:13401] + bytes(34356 - 13401)


def test_a_tree_of_holes_frozen_then_shrunk(tmp_path):
    """A tree whose every block was cut away by a shrink freezes to nothing; a later shrink
    (found by the fault-injection workload) must not look for its pointer blocks."""
    f = fresh(tmp_path, 1024, 64 << 20)
    f.write(200_000, b"x" * 100)             # a block far out: two levels of pointers
    f.truncate(100_000)                      # only holes are left below the new end
    f.sync()
    f.truncate(20_000)
    f.write(10, b"y")
    assert f.read(0, 20_000) == bytes(10) + b"y" + bytes(19_989)
    f.reopen()
    assert f.read(0, 20_000) == bytes(10) + b"y" + bytes(19_989)
