"""The disk: positioned reads and writes and fsync on a regular file or a block device.

This is the only module that touches the disk's file descriptor.  It knows bytes and offsets,
never blocks or trees.  RecordingDisk (for crash tests) records what a store asks of a disk so a
test can rebuild the image as it stood at any fsync.
"""

import os
import stat as statmod
import threading

IOV_MAX = 1024


class Disk:
    def __init__(self, path, readonly=False):
        self.path = path
        self.readonly = readonly
        st = os.stat(path)
        if statmod.S_ISDIR(st.st_mode):
            raise ValueError("is a directory, not a disk (a regular file or a block device)")
        self.isblockdev = statmod.S_ISBLK(st.st_mode)
        if not (self.isblockdev or statmod.S_ISREG(st.st_mode)):
            raise ValueError("not a disk: not a regular file or a block device")
        flags = os.O_RDONLY if readonly else os.O_RDWR
        self.fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self.nwrites = 0
        self.nreads = 0
        self.nsyncs = 0

    @classmethod
    def create(cls, path, size):
        """A sparse regular file of `size` bytes (an existing one is only grown)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return cls(path)

    def pread(self, off, n):
        self.nreads += 1
        b = os.pread(self.fd, n, off)
        if len(b) < n:      # past the end of a file reads as zeros, like an unwritten block
            b += bytes(n - len(b))
        return b

    def pwrite(self, off, data):
        self.nwrites += 1
        mv = memoryview(data)
        while mv:
            n = os.pwrite(self.fd, mv, off)
            mv = mv[n:]
            off += n

    def pwritev(self, off, bufs):
        """Write consecutive buffers at `off`, IOV_MAX at a time."""
        for i in range(0, len(bufs), IOV_MAX):
            chunk = bufs[i:i + IOV_MAX]
            total = sum(len(b) for b in chunk)
            self.nwrites += 1
            n = os.pwritev(self.fd, chunk, off)
            if n < total:   # short write: finish the rest the slow way
                self.pwrite(off + n, b"".join(bytes(b) for b in chunk)[n:])
            off += total

    def fsync(self):
        self.nsyncs += 1
        os.fsync(self.fd)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RecordingDisk:
    """Wraps a Disk and records every write and fsync, in order, for crash tests."""

    def __init__(self, disk):
        self.disk = disk
        self.size = disk.size
        self.path = disk.path
        self.readonly = disk.readonly
        self.ops = []          # ("w", off, bytes) and ("f",)
        self.lock = threading.Lock()
        self.nwrites = self.nreads = self.nsyncs = 0

    def pread(self, off, n):
        return self.disk.pread(off, n)

    def pwrite(self, off, data):
        with self.lock:
            self.ops.append(("w", off, bytes(data)))
        self.disk.pwrite(off, data)

    def pwritev(self, off, bufs):
        for b in bufs:
            self.pwrite(off, b)
            off += len(b)

    def fsync(self):
        with self.lock:
            self.ops.append(("f",))
        self.disk.fsync()

    def close(self):
        self.disk.close()
