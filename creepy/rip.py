"""creepy rip: serve a WORM disk (formatted with creepy fmt -w).

The same file server as 9pix in WORM mode: the log only grows, nothing is ever swept or
overwritten, and every attach is read-only except "wormwr", which gives the owner and allowed
users the root read-write to add archives (creepy(4)).
"""

from creepy.ninepix import main as _main


def main(argv=None):
    return _main(argv, worm=True)
