"""The 9P codec's cost per message on the hot path (walk, stat, clunk), in microseconds.

    python bench/codec.py [-n 200000]

Decodes the T-messages and encodes the R-messages of one walk+stat+clunk, n times, and prints
the mean cost of one message.  The codec should stay near a microsecond (DESIGN.md measured
0.1-1.3 us per message with precompiled struct); a regression of ten times shows here, not in
the test suite, which holds no timed assertion.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from creepy.ninep.codec import (QTDIR, Qid, Rclunk, Rstat, Rwalk, Stat, Tclunk,  # noqa: E402
                                Tstat, Twalk, decode, encode)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200_000)
    a = ap.parse_args()
    qdir = Qid(QTDIR, 7, 0x0123456789ABCDEF)
    st = Stat(type=1, dev=2, qid=Qid(0, 1, 2), mode=0o644, atime=3, mtime=4, length=5,
              name="file", uid="glenda", gid="glenda", muid="glenda")
    frames = [encode(m) for m in (Twalk(1, 2, 3, ("usr", "glenda")), Tstat(1, 3), Tclunk(1, 3))]
    replies = [Rwalk(1, (qdir, qdir)), Rstat(1, st), Rclunk(1)]
    best = None
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(a.n):
            for fr in frames:
                decode(fr)
            for r in replies:
                encode(r)
        per = (time.perf_counter() - t) / (a.n * 6)
        best = per if best is None else min(best, per)
    print(f"codec: {best * 1e6:.2f} us per message (best of 3 runs of {a.n} walk+stat+clunk "
          f"decodes and encodes)")


if __name__ == "__main__":
    main()
