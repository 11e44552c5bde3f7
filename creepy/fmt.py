"""creepy fmt: format a main disk or, with -w, a WORM disk.

    creepy fmt [-wy] [-s size] [-b bsize] disk

A disk is a regular file (created sparse at -s size when missing) or a block device.  A disk
that already holds a creepy file system is refused unless -y, with a message saying what is
there.  The Unix user running fmt owns the new tree and is a member of adm.
"""

import argparse
import os
import sys

from creepy.errors import NotCreepy
from creepy.fs.fs import unix_user
from creepy.store.disk import Disk
from creepy.store.format import DEFAULT_BSIZE, read_super_pair
from creepy.store.store import Store

DEFAULT_SIZE = 1 << 30


def parse_size(text):
    """'256M', '4G', '1048576', '64k' -> bytes."""
    t = text.strip().upper().rstrip("B").rstrip("I")
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1 << (10 * ("KMGT".index(t[-1]) + 1))
        t = t[:-1]
    try:
        n = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use bytes or 64K, 256M, 4G")
    if n <= 0:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return n


def describe(disk):
    """What the disk holds now, in words, or None if it holds no creepy file system."""
    try:
        sb, _ = read_super_pair(disk.pread)
    except NotCreepy:
        return None
    return (f"a creepy {sb['kind']} file system (era {sb['era']}, {sb['nblocks']} blocks of "
            f"{sb['bsize']} bytes, formatted by {sb['owner']})")


def format_disk(path, *, worm=False, force=False, size=None, bsize=DEFAULT_BSIZE, owner=None,
                out=sys.stdout):
    """Format path; returns the superblock written.  Raises SystemExit with a message when the
    disk holds a file system and force is not set."""
    if not os.path.exists(path):
        Disk.create(path, size or DEFAULT_SIZE).close()
    elif size and os.path.isfile(path) and os.path.getsize(path) < size:
        Disk.create(path, size).close()
    disk = Disk(path)
    try:
        what = describe(disk)
        if what and not force:
            raise SystemExit(f"creepy fmt: {path} holds {what}; use -y to format it anyway")
        sb = Store.format(disk, kind="worm" if worm else "main", owner=owner or unix_user(),
                          bsize=bsize)
    finally:
        disk.close()
    print(f"{path}: {'WORM' if worm else 'main'} disk, {sb['nblocks']} blocks of {bsize} bytes "
          f"({sb['nblocks'] * bsize / (1 << 20):.0f} MiB), owner {sb['owner']}", file=out)
    return sb


def main(argv=None):
    ap = argparse.ArgumentParser(prog="creepy fmt", description="format a creepy disk")
    ap.add_argument("-w", action="store_true", help="format a WORM disk (for creepy rip)")
    ap.add_argument("-y", action="store_true", help="format even if the disk holds a file system")
    ap.add_argument("-s", type=parse_size, metavar="size",
                    help="size of a disk file to create (default 1G)")
    ap.add_argument("-b", type=parse_size, default=DEFAULT_BSIZE, metavar="bsize",
                    help="block size (default 16K; 1K to 64K, a power of two)")
    ap.add_argument("disk")
    a = ap.parse_args(argv)
    try:
        format_disk(a.disk, worm=a.w, force=a.y, size=a.s, bsize=a.b)
    except (ValueError, OSError) as e:
        raise SystemExit(f"creepy fmt: {a.disk}: {e}")
    return 0
