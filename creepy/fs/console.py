"""/cons: the administration console, a file that takes commands and answers in text.

Writes are split into lines; each line is a command.  Everything the console says (the echo of
each command, its output, the prompt, and messages such as "disk full") goes to every fid that
has /cons open for reading, so `cat /cons` in one window watches what `echo sync >/cons` does in
another.  A read waits until there is something to say.  Commands run one at a time.

A transcript, as a reader sees it:

    creepy> sync
    synced era 12 (3 blocks, 0.8 ms)
    creepy> who
    unix!/tmp/ns.nemo.:0/9pix!nemo
    creepy>

Commands are registered in COMMANDS below with their usage; `?` lists them.  The arch and link
commands are added by the programs that can carry them out (register()).
"""

import asyncio
import inspect
import time

from creepy.errors import FsError
from creepy.fs.users import UsersError

PROMPT = "creepy> "
#: longest command line, in bytes; a write holding a longer one is refused whole
MAXLINE = 1024
#: output kept for readers, in bytes, shared by all of them: one that falls further behind
#: misses the oldest output (as the original's 256-message channel dropped its oldest)
MAXLOG = 1 << 20
#: most bytes one read returns: a client's reads waiting for output (up to 256 in flight on
#: a connection) may then take 2 MiB of it, not 256 copies of the whole log
MAXREAD = 8192
#: seconds of commands a write runs before the event loop serves others (a write of 1 MiB of
#: short lines is a quarter of a million commands)
SLICE = 0.005


class Reader:
    """A fid that has /cons open for reading: where it is in the shared output."""
    __slots__ = ("pos", "head", "event")

    def __init__(self, pos):
        self.pos = pos                  # offset in the console's output stream
        self.head = PROMPT.encode()     # what this reader alone sees first
        self.event = asyncio.Event()


class Console:
    """What a client writes costs at most MAXLINE per fid (its unfinished line) and the write
    it is in; what the console says costs at most MAXLOG, however many fids read it, and a
    read takes at most MAXREAD of it."""

    def __init__(self, fs):
        self.fs = fs
        self.readers = {}           # File -> Reader
        self.partial = {}           # File -> bytes of an unfinished line (at most MAXLINE)
        self.log = bytearray()      # the last MAXLOG bytes of output
        self.logstart = 0           # offset in the output stream of log[0]
        self.lock = None
        self.commands = dict(COMMANDS)

    def register(self, name, usage, handler, nargs=(0, 8)):
        """Add a command: handler(console, args) returns lines or an awaitable of lines."""
        self.commands[name] = (usage, nargs, handler)

    # --- the file --------------------------------------------------------------------------

    def open(self, f, want):
        if want & 4:
            self.readers[f] = Reader(self.logstart + len(self.log))
        return True

    def close(self, f):
        r = self.readers.pop(f, None)
        if r is not None:
            r.event.set()
        self.partial.pop(f, None)

    def read(self, f, count):
        r = self.readers.get(f)
        if r is None:
            raise FsError("console not open for reading")
        count = min(count, MAXREAD)
        if r.head or r.pos < self.logstart + len(self.log):
            return self._take(r, count)
        return self._wait(f, r, count)

    async def _wait(self, f, r, count):
        while r.pos >= self.logstart + len(self.log):
            r.event.clear()
            await r.event.wait()
            if self.readers.get(f) is not r:
                return b""
        return self._take(r, count)

    def _take(self, r, count):
        if r.head:
            out = r.head[:count]
            r.head = r.head[count:]
            return out
        i = max(r.pos - self.logstart, 0)       # a reader left behind skips what was dropped
        out = bytes(self.log[i:i + count])
        r.pos = self.logstart + i + len(out)
        return out

    def write(self, f, data):
        """Run the complete lines of partial + data; keep the rest for the next write.

        Refused whole with "console line too long" (and the unfinished line forgotten) if
        any line is longer than MAXLINE bytes."""
        text = self.partial.pop(f, b"") + bytes(data)
        end = text.rfind(b"\n") + 1
        if _too_long(text):
            raise FsError("console line too long")
        if end < len(text):
            self.partial[f] = text[end:]
        if not end:
            return len(data)
        return self._run_lines(f, text, end, len(data))

    async def _run_lines(self, f, text, end, n):
        # the lines stay bytes until their turn: a write waiting for the lock holds no more
        # than the bytes it came with
        if self.lock is None:
            self.lock = asyncio.Lock()
        clock = time.perf_counter
        async with self.lock:
            until = clock() + SLICE
            for line in _lines(text, end):
                await self.run(str(line, "utf-8", "replace"), f.user)
                if clock() >= until:
                    await asyncio.sleep(0)
                    until = clock() + SLICE
        return n

    async def run(self, line, user="console"):
        """Run one command line; its echo, output and the prompt go to every reader.
        Returns the output lines (for callers that are not reading /cons)."""
        line = line.split("#", 1)[0].strip()
        if not line:
            return []
        self._emit(line + "\n")
        words = line.split()
        cmd, args = words[0], words[1:]
        ent = self.commands.get(cmd)
        if ent is None:
            out = [f"'{cmd}'?"]
        else:
            usage, (lo, hi), handler = ent
            if not lo <= len(args) <= hi:
                out = [f"usage: {usage}"]
            else:
                try:
                    out = handler(self, args)
                    if inspect.isawaitable(out):
                        out = await out
                except FsError as e:
                    out = [f"{cmd}: {e.ename}"]
                except UsersError as e:
                    out = [f"{cmd}: {e}"]
        text = "".join(s + "\n" for s in out)
        self._emit(text + PROMPT)
        return out

    def say(self, msg):
        """A message from the file server itself (not an answer to a command)."""
        self.fs.log(msg)
        self._emit(msg + "\n")

    def _emit(self, text):
        self.log += text.encode()
        extra = len(self.log) - MAXLOG
        if extra > 0:
            del self.log[:extra]
            self.logstart += extra
        for r in self.readers.values():
            r.event.set()


_HALF = (MAXLINE + 1) // 2


def _too_long(text):
    """Whether text holds a line (or an unfinished one at its end) of more than MAXLINE bytes.

    Quick for a megabyte of short lines, looked at before any of them runs: a run of more than
    MAXLINE bytes without a newline holds a whole block of HALF bytes (blocks cut at multiples
    of HALF), so only the blocks without a newline are measured, not every line."""
    n = len(text)
    for start in range(0, n, _HALF):
        stop = start + _HALF if start + _HALF < n else n
        if text.find(b"\n", start, stop) < 0:
            right = text.find(b"\n", stop)
            if (n if right < 0 else right) - (text.rfind(b"\n", 0, start) + 1) > MAXLINE:
                return True
    return False


def _lines(text, end):
    """The lines of text[:end] (which ends with a newline), as memoryviews, without copying."""
    m = memoryview(text)
    start = 0
    while start < end:
        nl = text.index(b"\n", start, end)
        yield m[start:nl]
        start = nl + 1


# --- commands ------------------------------------------------------------------------------

def _allow(con, args):
    u = con.fs.users
    if args:
        u.allow(args[0])                # UsersError("user not found") unless enabled
    return u.report_allowed(args[0] if args else None)


def _disallow(con, args):
    u = con.fs.users
    u.disallow(args[0] if args else None)
    return u.report_allowed(args[0] if args else None)


async def _sync(con, args):
    fs = con.fs
    st = fs.store
    before = st.stats["blocks_written"]
    wrote = await fs.sync()
    if not wrote:
        return [f"synced: nothing to write (era {st.committed_era})"]
    return [f"synced era {st.committed_era} ({st.stats['blocks_written'] - before} blocks, "
            f"{st.stats['last_sync_s'] * 1e3:.1f} ms)"]


async def _halt(con, args):
    con._emit("halting\n")
    await con.fs.halt()
    return ["halted"]


def _stats(con, args):
    return con.fs.stats_text().rstrip("\n").split("\n")


def _users(con, args):
    return con.fs.users.report_users()


def _uname(con, args):
    who = args[0] if args else con.fs.owner
    return [con.fs.users.report_uname(who)]


def _who(con, args):
    out = []
    for p in con.fs.peers:
        out.append(f"{getattr(p, 'addr', '?')}!{getattr(p, 'uname', None) or 'none'}")
    return out or ["no connections"]


async def _link(con, args):
    await con.fs.link(args[0], args[1], con.fs.owner)
    return [f"linked {args[0]} {args[1]}"]


def _help(con, args):
    return ["commands:"] + [f"> {usage}" for name, (usage, _, _) in sorted(con.commands.items())
                            if name != "?"]


COMMANDS = {
    "allow": ("allow [uid]", (0, 1), _allow),
    "disallow": ("disallow [uid]", (0, 1), _disallow),
    "halt": ("halt", (0, 0), _halt),
    "stats": ("stats", (0, 0), _stats),
    "sync": ("sync", (0, 0), _sync),
    "uname": ("uname [uid]", (0, 1), _uname),
    "users": ("users", (0, 0), _users),
    "who": ("who", (0, 0), _who),
    "link": ("link src dst", (2, 2), _link),
    "?": ("?", (0, 0), _help),
}
