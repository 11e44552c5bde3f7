"""rip (the WORM) and link, end to end on real servers.

- rip refuses every change through any attach but `wormwr`, and `wormwr` refuses users who are
  not the owner or allowed;
- a full WORM disk refuses writes cleanly and keeps serving reads;
- `link` in 9pix: a directory of /root linked to a snapshot name keeps reading as it was while
  its original changes, syncs and sweeps reuse the disk; `creepy check` passes afterwards.
"""

import subprocess
import sys

import pytest

from creepy.ninep.client import Error9P, SyncClient, nochange
from creepy.ninep.codec import DMDIR, OREAD, ORDWR, OTRUNC, OWRITE
from creepy.ninep.dial import getuser
from servers import DEADLINE, Server9pix, ServerError, creepy_env

ME = getuser()


class RipServer(Server9pix):
    """`creepy rip` on a WORM disk formatted with `creepy fmt -w`, run as Server9pix runs
    9pix (-a on loopback TCP and a Unix socket in the test's directory, unless auth)."""

    def __init__(self, dirpath, *, size="64M", bsize="4K", **kw):
        super().__init__(dirpath, fmt=False, **kw)
        r = subprocess.run([sys.executable, "-m", "creepy", "fmt", "-w", "-s", size, "-b", bsize,
                            self.disk], capture_output=True, text=True, env=creepy_env(),
                           timeout=DEADLINE)
        if r.returncode != 0:
            raise ServerError(f"creepy fmt -w failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def argv(self):
        a = super().argv()
        a[a.index("9pix")] = "rip"
        return a
