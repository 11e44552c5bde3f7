"""A POSIX battery for a mounted tree: what everyday programs expect of a local file system.

Each check takes a fresh, empty directory on the file system under test and raises
AssertionError (or OSError) when the file system differs from what POSIX (and Linux's own
file systems) do.  The checks know nothing of creepy: they run unchanged on any mount
(creepy mount, the Linux kernel's 9P client, 9pfuse), which is how results compare.

Where a 9P2000 server cannot do what POSIX asks, the check says what it accepts instead and
why (the rename across directories: EXDEV, with mv copying, as Linux's v9fs does).
"""

import errno
import mmap
import os
import shutil
import subprocess
import time


def _write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _errno(code, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        assert e.errno == code, f"{fn.__name__}{args}: {errno.errorcode.get(e.errno)}, " \
                                f"want {errno.errorcode[code]}"
        return
    raise AssertionError(f"{fn.__name__}{args} succeeded; want {errno.errorcode[code]}")


def check_create_write_read_and_size(d):
    p = os.path.join(d, "f")
    _write(p, b"hello, world\n")
    assert _read(p) == b"hello, world\n"
    st = os.stat(p)
    assert st.st_size == 13 and st.st_nlink == 1
    assert os.listdir(d) == ["f"]


def check_o_excl_refuses_an_existing_file(d):
    p = os.path.join(d, "f")
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    _errno(errno.EEXIST, os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)


def check_mkdir_rmdir_and_unlink_errors(d):
    sub = os.path.join(d, "sub")
    os.mkdir(sub)
    _errno(errno.EEXIST, os.mkdir, sub)
    _write(os.path.join(sub, "f"), b"x")
    _errno(errno.ENOTEMPTY, os.rmdir, sub)
    _errno(errno.ENOTDIR, os.rmdir, os.path.join(sub, "f"))
    _errno(errno.EISDIR, os.unlink, sub)
    _errno(errno.ENOENT, os.unlink, os.path.join(d, "missing"))
    _errno(errno.ENOENT, os.stat, os.path.join(d, "missing", "deeper"))
    os.unlink(os.path.join(sub, "f"))
    os.rmdir(sub)
    assert os.listdir(d) == []


def check_rename_onto_an_existing_file_replaces_it(d):
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    _write(a, b"new content")
    _write(b, b"old content that is longer")
    os.rename(a, b)
    assert sorted(os.listdir(d)) == ["b"]
    assert _read(b) == b"new content"
    os.replace(b, a)
    assert _read(a) == b"new content" and os.listdir(d) == ["a"]


def check_rename_of_directories_follows_rename2(d):
    src, empty, full = (os.path.join(d, n) for n in ("src", "empty", "full"))
    os.mkdir(src)
    _write(os.path.join(src, "inside"), b"i")
    os.mkdir(empty)
    os.mkdir(full)
    _write(os.path.join(full, "x"), b"x")
    _errno(errno.ENOTEMPTY, os.rename, src, full)
    os.rename(src, empty)                       # onto an empty directory: replaces it
    assert sorted(os.listdir(d)) == ["empty", "full"]
    assert _read(os.path.join(empty, "inside")) == b"i"
    f = os.path.join(d, "file")
    _write(f, b"f")
    _errno(errno.EISDIR, os.rename, f, full)
    _errno(errno.ENOTDIR, os.rename, full, f)


def check_rename_across_directories_moves_the_file_with_mv(d):
    one, two = os.path.join(d, "one"), os.path.join(d, "two")
    os.mkdir(one)
    os.mkdir(two)
    _write(os.path.join(one, "f"), b"moving")
    try:
        os.rename(os.path.join(one, "f"), os.path.join(two, "f"))
    except OSError as e:
        assert e.errno == errno.EXDEV, e        # 9P2000 renames within a directory only
        subprocess.run(["mv", os.path.join(one, "f"), os.path.join(two, "f")], check=True)
    assert os.listdir(one) == [] and _read(os.path.join(two, "f")) == b"moving"


def check_an_open_file_follows_its_renames(d):
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    fd = os.open(a, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first ")
        os.rename(a, b)
        os.write(fd, b"second")
        assert os.pread(fd, 100, 0) == b"first second"
    finally:
        os.close(fd)
    assert _read(b) == b"first second" and not os.path.exists(a)


def check_an_open_file_follows_renames_of_its_directory(d):
    old, new = os.path.join(d, "old"), os.path.join(d, "new")
    os.mkdir(old)
    fd = os.open(os.path.join(old, "f"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.rename(old, new)
        os.write(fd, b"still here")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert _read(os.path.join(new, "f")) == b"still here"
    _write(os.path.join(new, "g"), b"walks from the renamed directory")
    assert sorted(os.listdir(new)) == ["f", "g"]


def check_an_unlinked_open_file_stays_usable_until_closed(d):
    p = os.path.join(d, "tmp")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"before unlink, ")
        os.unlink(p)
        assert os.listdir(d) == [] and not os.path.exists(p)
        os.write(fd, b"after unlink")
        os.ftruncate(fd, 40)
        assert os.pread(fd, 100, 0) == b"before unlink, after unlink" + bytes(13)
        st = os.fstat(fd)
        assert st.st_size == 40 and st.st_nlink == 0
        _write(p, b"a new file of the same name")
        assert os.pread(fd, 6, 0) == b"before"
    finally:
        os.close(fd)
    assert _read(p) == b"a new file of the same name" and os.listdir(d) == ["tmp"]


def check_utime_sets_times_and_touch_sets_now(d):
    p = os.path.join(d, "f")
    _write(p, b"x")
    os.utime(p, (1_000_000_000, 1_234_567_890))
    assert os.stat(p).st_mtime == 1_234_567_890
    subprocess.run(["touch", "-m", "-d", "2020-02-29 12:00:00 UTC", p], check=True)
    assert os.stat(p).st_mtime == 1582977600
    before = int(time.time())
    subprocess.run(["touch", p], check=True)
    assert before - 1 <= os.stat(p).st_mtime <= time.time() + 1
    sub = os.path.join(d, "sub")
    os.mkdir(sub)
    os.utime(sub, (0, 999_999_999))
    assert os.stat(sub).st_mtime == 999_999_999


def check_truncate_shrinks_and_extends_with_zeros(d):
    p = os.path.join(d, "f")
    _write(p, b"0123456789")
    os.truncate(p, 4)
    assert _read(p) == b"0123"
    os.truncate(p, 9)
    assert _read(p) == b"0123" + bytes(5) and os.stat(p).st_size == 9
    fd = os.open(p, os.O_RDWR)
    try:
        os.ftruncate(fd, 2)
        assert os.fstat(fd).st_size == 2 and os.pread(fd, 10, 0) == b"01"
    finally:
        os.close(fd)
    with open(p, "r+b") as f:          # O_TRUNC on open
        pass
    with open(p, "wb") as f:
        f.write(b"w")
    assert _read(p) == b"w"


def check_large_writes_and_reads_in_one_call(d):
    p = os.path.join(d, "big")
    data = os.urandom(8 << 20) + b"end"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        assert os.pread(fd, len(data) + 100, 0) == data
        assert os.pread(fd, 3 << 20, 5 << 20) == data[5 << 20:8 << 20]
    finally:
        os.close(fd)
    assert _read(p) == data


def check_writes_past_the_end_leave_a_hole_of_zeros(d):
    p = os.path.join(d, "sparse")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"far", 1 << 20)
        os.pwrite(fd, b"near", 10)
    finally:
        os.close(fd)
    data = _read(p)
    assert len(data) == (1 << 20) + 3
    assert data[10:14] == b"near" and data[-3:] == b"far"
    assert data[:10] == bytes(10) and data[14:1 << 20] == bytes((1 << 20) - 14)


def check_read_at_and_past_the_end(d):
    p = os.path.join(d, "f")
    _write(p, b"abc")
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 3) == b"" and os.pread(fd, 10, 1000) == b""
        assert os.read(fd, 2) == b"ab" and os.read(fd, 2) == b"c" and os.read(fd, 2) == b""
    finally:
        os.close(fd)


def check_o_append_writes_at_the_end(d):
    p = os.path.join(d, "log")
    _write(p, b"one\n")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"two\n")
    finally:
        os.close(fd)
    with open(p, "a") as f:
        f.write("three\n")
    assert _read(p) == b"one\ntwo\nthree\n"


def check_chmod_and_modes_asked_at_creation(d):
    old = os.umask(0o022)
    try:
        p = os.path.join(d, "f")
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o666))
        assert os.stat(p).st_mode & 0o777 == 0o644
        os.chmod(p, 0o600)
        assert os.stat(p).st_mode & 0o777 == 0o600
        os.chmod(p, 0o755)
        assert os.stat(p).st_mode & 0o777 == 0o755
        sub = os.path.join(d, "private")
        os.mkdir(sub, 0o700)
        st = os.stat(sub)
        assert st.st_mode & 0o777 == 0o700 and os.path.isdir(sub)
        q = os.path.join(sub, "secret")
        os.close(os.open(q, os.O_WRONLY | os.O_CREAT, 0o640))
        assert os.stat(q).st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def check_a_directory_of_2000_entries_lists_completely(d):
    names = {f"entry-{i:04d}-{'x' * (i % 50)}" for i in range(2000)}
    for n in names:
        os.close(os.open(os.path.join(d, n), os.O_WRONLY | os.O_CREAT, 0o644))
    assert set(os.listdir(d)) == names
    with os.scandir(d) as it:
        seen = {e.name for e in it if e.is_file()}
    assert seen == names
    for n in list(names)[:1000]:
        os.unlink(os.path.join(d, n))
    assert len(os.listdir(d)) == 1000


def check_statvfs_reports_the_disk(d):
    s = os.statvfs(d)
    assert s.f_blocks > 0 and 0 < s.f_bfree <= s.f_blocks and s.f_bavail <= s.f_bfree
    assert s.f_bsize >= 512 and s.f_namemax >= 255
    shutil.disk_usage(d)


def check_fsync_and_sync_succeed(d):
    p = os.path.join(d, "f")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert _read(p) == b"durable"


def check_mmap_reads_and_shared_writes(d):
    p = os.path.join(d, "mapped")
    _write(p, bytes(range(256)) * 64)
    fd = os.open(p, os.O_RDWR)
    try:
        m = mmap.mmap(fd, 16384, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            assert m[256:260] == b"\x00\x01\x02\x03"
            m[0:5] = b"HELLO"
            m.flush()
        finally:
            m.close()
    finally:
        os.close(fd)
    assert _read(p)[:6] == b"HELLO\x05"


def check_links_and_special_files_are_refused_cleanly(d):
    """9P2000 holds files and directories only: symlink, link and mknod fail with EPERM (or
    succeed, on a file system that has them)."""
    p = os.path.join(d, "f")
    _write(p, b"x")
    for fn, args in ((os.symlink, ("f", os.path.join(d, "sym"))),
                     (os.link, (p, os.path.join(d, "hard"))),
                     (os.mkfifo, (os.path.join(d, "fifo"),))):
        try:
            fn(*args)
        except OSError as e:
            assert e.errno in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP), (fn, e)


CHECKS = [v for k, v in sorted(globals().items()) if k.startswith("check_")]
