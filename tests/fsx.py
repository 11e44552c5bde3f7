"""fsx-style differential testing: seeded random writes, reads, truncates and extensions of one
file, compared with an in-memory model after every read.

Offsets and lengths cluster around block boundaries (a block's first and last bytes, one byte
either side) and also land anywhere in a sparse range, so holes, tails zeroed by shrinks,
extensions past a shrink, and trees that grow and lose levels are all exercised.  The file
under test is reached through a small adapter (read, write, truncate, length, plus optional
sync and reopen), so the same generator drives the store directly and the real server over 9P.

Reproduce a failure with the seed and operation count the assertion prints:
    FSX_SEED=<seed> FSX_OPS=<n> python -m pytest tests/test_fsx.py -k <test>
"""

import random


class Model:
    """The file as it should be: a bytearray, grown with zeros."""

    def __init__(self):
        self.data = bytearray()

    def write(self, off, buf):
        end = off + len(buf)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[off:end] = buf

    def truncate(self, length):
        if length < len(self.data):
            del self.data[length:]
        else:
            self.data.extend(bytes(length - len(self.data)))

    def read(self, off, count):
        return bytes(self.data[off:off + count])


class Fsx:
    """Generates operations for a file whose blocks hold `cap` bytes.

    target: an object with read(off, count) -> bytes, write(off, data), truncate(length),
    length() -> int, and optionally sync() and reopen().  Every read is compared with the
    model at once, and so is the length after every `length_every` operations."""

    def __init__(self, seed, target, cap, max_len, sync_every=0, reopen_every=0,
                 max_io=None, length_every=1):
        self.seed = seed
        self.rng = random.Random(seed)
        self.t = target
        self.cap = cap
        self.max_len = max_len
        self.max_io = max_io or 3 * cap
        self.sync_every = sync_every
        self.reopen_every = reopen_every
        self.length_every = length_every    # compare the length every this many operations
        self.model = Model()
        self.ops = 0
        self.history = []           # the last operations, for the failure message

    def offset(self):
        r = self.rng.random()
        n = len(self.model.data)
        if r < 0.45:                # near a block boundary
            b = self.rng.randrange(0, self.max_len // self.cap + 1)
            return max(0, min(self.max_len, b * self.cap + self.rng.choice(
                (-1, 0, 1, self.cap - 1, self.rng.randrange(self.cap)))))
        if r < 0.6 and n:           # near the current end of file
            return max(0, min(self.max_len, n + self.rng.randrange(-self.cap, self.cap)))
        return self.rng.randrange(0, self.max_len + 1)

    def count(self):
        r = self.rng.random()
        if r < 0.3:
            return self.rng.randrange(1, 65)
        if r < 0.6:
            return self.cap + self.rng.choice((-1, 0, 1))
        return self.rng.randrange(1, self.max_io + 1)

    def step(self):
        self.ops += 1
        r = self.rng.random()
        if r < 0.35:
            off = self.offset()
            count = self.count()
            self._note("read", off, count)
            got = self.t.read(off, count)
            want = self.model.read(off, count)
            if got != want:
                self._fail(f"read {count} at {off}: {_diff(got, want, off)}")
        elif r < 0.7:
            off = self.offset()
            count = min(self.count(), self.max_len - off) or 1
            data = self.rng.randbytes(count)
            self._note("write", off, count)
            self.t.write(off, data)
            self.model.write(off, data)
        elif r < 0.85:
            length = self.offset()
            if self.rng.random() < 0.3:
                length = min(length, len(self.model.data))     # shrinks are common
            self._note("truncate", length)
            self.t.truncate(length)
            self.model.truncate(length)
        elif r < 0.93:
            # extend past the end: what lies between must read as zeros
            length = min(self.max_len, len(self.model.data) + self.rng.randrange(1, 3 * self.cap))
            self._note("extend", length)
            self.t.truncate(length)
            self.model.truncate(length)
        else:
            self._note("read all")
            got = self.t.read(0, len(self.model.data) + 10)
            if got != bytes(self.model.data):
                self._fail(f"whole file: {_diff(got, bytes(self.model.data), 0)}")
        if self.ops % self.length_every == 0 and self.t.length() != len(self.model.data):
            self._fail(f"length {self.t.length()}, model {len(self.model.data)}")
        if self.sync_every and self.ops % self.sync_every == 0:
            self._note("sync")
            self.t.sync()
        if self.reopen_every and self.ops % self.reopen_every == 0:
            self._note("reopen")
            self.t.reopen()

    def run(self, nops):
        for _ in range(nops):
            self.step()

    def _note(self, *op):
        self.history.append(op)
        if len(self.history) > 12:
            del self.history[0]

    def _fail(self, what):
        raise AssertionError(f"fsx seed {self.seed}, operation {self.ops}: {what}; the last "
                             f"operations: {self.history}")


def _diff(got, want, off):
    if len(got) != len(want):
        return f"{len(got)} bytes, expected {len(want)}"
    i = next(i for i in range(len(got)) if got[i] != want[i])
    return (f"first difference at byte {off + i}: got {got[i:i + 8].hex()}, expected "
            f"{want[i:i + 8].hex()}")
