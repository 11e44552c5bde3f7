"""A disk that fails on request: the n-th write or fsync from now raises OSError (EIO or ENOSPC),
as a dying device or a full host file system under a sparse disk file would.

A failing write first writes a random prefix of its bytes (a device may have taken part of it),
so the store must cope with torn blocks where a commit failed, not only with clean refusals.
Reads are passed through.  The wrapper is thread-safe: the committer writes on its own thread.
"""

import errno
import random
import threading


class FaultyDisk:
    def __init__(self, disk, seed=0):
        self.disk = disk
        self.size = disk.size
        self.path = disk.path
        self.readonly = disk.readonly
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.countdown = None       # operations left before the failure, None: disarmed
        self.kinds = ("w", "f")     # which operations count toward the failure
        self.err = errno.EIO
        self.injected = 0           # failures raised so far
        self.ops = 0

    def arm(self, after, err=errno.EIO, kinds=("w", "f")):
        """Fail the operation `after` operations from now (0: the next one) of the given kinds
        ("w" writes, "f" fsyncs)."""
        with self.lock:
            self.countdown = after
            self.err = err
            self.kinds = kinds

    def disarm(self):
        with self.lock:
            self.countdown = None

    def _due(self, kind):
        with self.lock:
            self.ops += 1
            if self.countdown is None or kind not in self.kinds:
                return False
            if self.countdown > 0:
                self.countdown -= 1
                return False
            self.countdown = None
            self.injected += 1
            return True

    def _fail(self):
        raise OSError(self.err, "injected " + errno.errorcode[self.err])

    def pread(self, off, n):
        return self.disk.pread(off, n)

    def pwrite(self, off, data):
        if self._due("w"):
            cut = self.rng.randrange(0, len(data) + 1)
            if cut:
                self.disk.pwrite(off, bytes(memoryview(data)[:cut]))
            self._fail()
        self.disk.pwrite(off, data)

    def pwritev(self, off, bufs):
        for b in bufs:
            self.pwrite(off, b)
            off += len(b)

    def fsync(self):
        if self._due("f"):
            self._fail()
        self.disk.fsync()

    def close(self):
        self.disk.close()
