"""Crash simulation: record what a store writes, rebuild the disk as a crash would leave it.

A RecordingDisk logs every write and fsync.  A crash point is "after fsync number k": the image
holds everything written before that fsync.  Writes after it may have reached the disk in any
order and in part, so each point is also tried with a random subset of the following writes,
the last of them torn (only a prefix of its bytes written).
"""

from creepy.store.disk import Disk
from creepy.store.store import Store


def fsync_points(ops):
    return [i for i, op in enumerate(ops) if op[0] == "f"]


def build_image(base, ops, upto, extra=()):
    """The disk image after ops[:upto] plus the (possibly torn) extra writes."""
    img = bytearray(base)
    for op in ops[:upto]:
        if op[0] == "w":
            _apply(img, op[1], op[2])
    for off, data in extra:
        _apply(img, off, data)
    return img


def _apply(img, off, data):
    end = off + len(data)
    if end > len(img):
        img.extend(bytes(end - len(img)))
    img[off:end] = data


def torn_extras(ops, start, rng):
    """A random subset of the writes between ops[start] and the next fsync, in random order,
    the last one torn at a random 512-byte boundary."""
    following = []
    for op in ops[start + 1:]:
        if op[0] == "f":
            break
        following.append(op)
    if not following:
        return []
    chosen = rng.sample(following, rng.randint(1, len(following)))
    extras = [(op[1], op[2]) for op in chosen]
    off, data = extras[-1]
    cut = rng.randrange(0, max(1, len(data) // 512)) * 512 + rng.choice((0, 17))
    extras[-1] = (off, data[:cut])
    return extras


def superblock_eras_written(ops, upto, extra, bsize):
    """Eras whose superblock write is (at least partly) in the image."""
    return {_era_of_super(data) for off, data in
            [(op[1], op[2]) for op in ops[:upto] if op[0] == "w"] + list(extra)
            if off < 2 * bsize and off % bsize == 0 and len(data) >= 24}


def _era_of_super(data):
    return int.from_bytes(data[16:24], "little")


def open_image(img, path):
    with open(path, "wb") as fp:
        fp.write(img)
    return Store.open(Disk(path))
