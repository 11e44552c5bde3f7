"""creepy history and creepy yesterday: a file's past, read from the archive a rip serves.

    creepy history   [-uD] [-a addr] [-t tree] [-p prefix] path...
    creepy yesterday [-u] [-a addr] [-t tree] [-p prefix] [-n days | -d yyyymmdd[.n]]
                     [-r [-o file | -m addr]] path...

Like Plan 9's history(1) and yesterday(1), against the WORM served by `creepy rip` (attach "",
read-only).  The archive holds, by convention (creepy(4)), one directory per archived day of
each tree:

    /<tree>/<yyyy>/<mmdd>           the day's archive of the tree (its /root at that time)
    /<tree>/<yyyy>/<mmdd>.<n>       more archives of the same day, n = 1, 2, ...
    /<tree>/<yyyy>/<mmdd>.partial   an archive being written (or left half written): skipped

A path names a file inside the archived tree, as the main server's /root shows it
(`usr/glenda/notes`, `/usr/glenda/notes` or `/root/usr/glenda/notes`).

history lists the distinct versions of the file, newest first, one line each: the file's mtime,
the newest archive holding that version, its length and the user who last changed it:

    Nov 21 10:05:31 UTC 2026 /main/2026/1121/usr/glenda/notes 123 [glenda]
    removed /main/2026/1120/usr/glenda/notes

A version changes when the mtime, the qid version or the length change between two archives
next to each other; a file missing from an archive after being in the one before prints a
`removed` line naming the first archive without it.  yesterday prints the path of the file in
the newest archive made on or before a day (yesterday by default), and with -r restores it: to
a local file (-o), or through 9P into the main server (-m) at the same path.

The archive's layout and the output formats are in docs/history.md.  This module only reads
the archive (attach "" of rip is read-only); its one writer is the -m restore, which goes to
the main server as the user running the command.
"""

import argparse
import asyncio
import datetime
import difflib
import os
import posixpath
import re
import sys
import time

from creepy.ninep.client import Client, Error9P
from creepy.ninep.codec import DMDIR, OREAD, OTRUNC, OWRITE

#: where rip posts itself by default (creepy rip without -A or -S)
DEFAULT_RIP = "rip"
#: stats asked for at once when scanning the archives of one file
PARALLEL = 32

YEAR_RE = re.compile(r"[0-9]{4}")
DAY_RE = re.compile(r"([0-9]{2})([0-9]{2})(?:\.([0-9]+))?")
WHEN_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:\.([0-9]+))?")
#: errors meaning "the file is not in this archive" (anything else is reported)
MISSING = ("file does not exist", "not a directory")

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class HistoryError(Exception):
    """A failure to report to the user as it is (one line, no traceback)."""


# --- the archive's layout (pure) -------------------------------------------------------------

class Dump:
    """One archive of a tree: /<tree>/<yyyy>/<mmdd>[.n]."""

    __slots__ = ("tree", "year", "month", "day", "n", "name")

    def __init__(self, tree, year, name):
        m = DAY_RE.fullmatch(name)
        if m is None or not YEAR_RE.fullmatch(year):
            raise ValueError(f"not an archive name: {year}/{name}")
        self.tree = tree
        self.year = int(year)
        self.month = int(m.group(1))
        self.day = int(m.group(2))
        self.n = int(m.group(3)) if m.group(3) is not None else 0
        self.name = f"{year}/{name}"
        datetime.date(self.year, self.month, self.day)   # ValueError for 1345 or 0230

    @property
    def date(self):
        return datetime.date(self.year, self.month, self.day)

    @property
    def key(self):
        """Chronological order: by day, then 1121 < 1121.1 < 1121.2 < 1121.10."""
        return (self.year, self.month, self.day, self.n)

    def dir(self):
        """The archive's directory, relative to rip's root."""
        return f"{self.tree}/{self.name}"

    def path(self, inside):
        """Where the file `inside` the tree is in this archive, relative to rip's root."""
        return f"{self.dir()}/{inside}" if inside else self.dir()

    def __repr__(self):
        return f"Dump({self.dir()})"


def parse_dump(tree, year, name):
    """The Dump for /<tree>/<year>/<name>, or None if the name is not an archive's (a
    .partial archive, a stray file, an impossible date)."""
    try:
        return Dump(tree, year, name)
    except ValueError:
        return None


def tree_path(path):
    """The path inside the archived tree: 'usr/glenda/notes' from 'usr/glenda/notes',
    '/usr/glenda/notes' or '/root/usr/glenda/notes' (the main server's view).  '' is the
    tree's top.  '..' may not climb out of the tree."""
    if path == "/root" or path.startswith("/root/"):
        path = path[len("/root"):]
    parts = []
    for name in path.split("/"):
        if name == "..":
            if not parts:
                raise HistoryError(f"{path}: the path leaves the archived tree")
            parts.pop()
        elif name not in ("", "."):
            parts.append(name)
    return "/".join(parts)


def same_version(a, b):
    """Two stats of one file name the same version: mtime, qid version and length agree."""
    return a.mtime == b.mtime and a.qid.vers == b.qid.vers and a.length == b.length


def versions(found):
    """The history of one file from (dump, stat or None) in chronological order.

    Returns events newest first: ("version", dump, stat) for each run of archives next to
    each other holding the same version (dump is the newest of the run), and ("removed", dump,
    None) where the file is missing from an archive after being in the one before (dump is
    that first archive without it).  Archives before the file first appears give nothing."""
    events = []
    prev = None         # the stat in the archive before, None if missing there
    for dump, st in found:
        if st is None:
            if prev is not None:
                events.append(("removed", dump, None))
        elif prev is None or not same_version(prev, st):
            events.append(["version", dump, st])
        else:
            events[-1][1] = dump
            events[-1][2] = st
        prev = st
    return [tuple(e) for e in reversed(events)]


def pick_dump(dumps, day, n=None):
    """The archive to read for `day`: with n, exactly <day>.<n> (n 0 is the plain <mmdd>);
    without, the newest archive made on or before the day.  None if there is none."""
    if n is not None:
        for d in dumps:
            if d.date == day and d.n == n:
                return d
        return None
    best = None
    for d in dumps:
        if d.date <= day and (best is None or d.key > best.key):
            best = d
    return best


def parse_when(text):
    """-d yyyymmdd or yyyymmdd.n -> (date, n or None)."""
    m = WHEN_RE.fullmatch(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"bad date {text!r}: use yyyymmdd or yyyymmdd.n")
    try:
        day = datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad date {text!r}: {e}")
    return day, (int(m.group(4)) if m.group(4) is not None else None)


def prtime(t, utc=False):
    """A time as Plan 9's history prints it (ctime without the weekday):
    'Nov  1 09:05:31 UTC 2026'."""
    tm = time.gmtime(t) if utc else time.localtime(t)
    zone = "UTC" if utc else (tm.tm_zone or time.strftime("%Z", tm))
    return (f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:"
            f"{tm.tm_sec:02d} {zone} {tm.tm_year}")


def shown(prefix, rel):
    """How a path relative to rip's root is printed: under prefix (where rip is mounted)."""
    return f"{prefix.rstrip('/')}/{rel}"


def version_line(st, path, utc=False):
    return f"{prtime(st.mtime, utc)} {path} {st.length} [{st.muid}]"


def diff_lines(old, new, oldname, newname):
    """A unified diff from old to new (bytes), or a one-line note for binary files."""
    if old == new:
        return []
    try:
        if b"\0" in old or b"\0" in new:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "NUL")
        a = old.decode("utf-8").splitlines(keepends=True)
        b = new.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return [f"binary files {oldname} and {newname} differ\n"]
    out = []
    for line in difflib.unified_diff(a, b, oldname, newname):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return out


# --- the archive over 9P ---------------------------------------------------------------------

class Archive:
    """The trees and archives a rip serves, read through one 9P connection (attach "")."""

    def __init__(self, client):
        self.c = client

    @classmethod
    async def connect(cls, addr):
        return cls(await _connect(addr, "rip"))

    async def close(self):
        await self.c.close()

    async def _dirs(self, path):
        try:
            return [st.name for st in await self.c.listdir(path) if st.mode & DMDIR]
        except Error9P as e:
            if e.ename in MISSING:
                return []
            raise HistoryError(f"/{path}: {e.ename}")

    async def trees(self):
        """Top-level directories holding at least one year directory, sorted."""
        out = []
        for name in sorted(await self._dirs("")):
            if any(YEAR_RE.fullmatch(y) for y in await self._dirs(name)):
                out.append(name)
        return out

    async def tree(self, tree):
        """The tree to read: `tree` if given (and there), else the only one there is."""
        trees = await self.trees()
        if tree is not None:
            if tree not in trees:
                raise HistoryError(f"no tree {tree!r} in the archive"
                                   + (f" (trees: {', '.join(trees)})" if trees else ""))
            return tree
        if len(trees) == 1:
            return trees[0]
        if not trees:
            raise HistoryError("the archive holds no trees (no /<tree>/<yyyy>/<mmdd>)")
        raise HistoryError(f"the archive holds {len(trees)} trees ({', '.join(trees)}): "
                           f"name one with -t")

    async def dumps(self, tree):
        """Every complete archive of the tree, oldest first."""
        out = []
        for year in sorted(y for y in await self._dirs(tree) if YEAR_RE.fullmatch(y)):
            for name in await self._dirs(f"{tree}/{year}"):
                d = parse_dump(tree, year, name)
                if d is not None:
                    out.append(d)
        out.sort(key=lambda d: d.key)
        return out

    async def stat(self, rel):
        """The stat of rel (relative to rip's root), None if it is not there."""
        try:
            return await self.c.stat_path(rel)
        except Error9P as e:
            if e.ename in MISSING:
                return None
            raise HistoryError(f"/{rel}: {e.ename}")

    async def stats(self, dumps, inside):
        """[(dump, stat or None)] for the file in every dump, asked PARALLEL at a time."""
        gate = asyncio.Semaphore(PARALLEL)

        async def one(d):
            async with gate:
                return d, await self.stat(d.path(inside))
        return list(await asyncio.gather(*(one(d) for d in dumps)))

    async def read(self, rel):
        try:
            return await self.c.read_file(rel)
        except Error9P as e:
            raise HistoryError(f"/{rel}: {e.ename}")


async def _connect(addr, what):
    try:
        return await Client.connect(addr, aname="")
    except Error9P as e:
        raise HistoryError(f"{what} at {addr}: {e.ename}")
    except (OSError, ValueError, ConnectionError) as e:
        raise HistoryError(f"cannot reach the {what} at {addr}: {e}")


# --- history ---------------------------------------------------------------------------------

async def history(out, addr, tree, paths, prefix="", utc=False, diff=False):
    """Print the history of each path; returns the number of paths found in no archive."""
    ar = await Archive.connect(addr)
    missing = 0
    try:
        tree = await ar.tree(tree)
        dumps = await ar.dumps(tree)
        for path in paths:
            inside = tree_path(path)
            events = versions(await ar.stats(dumps, inside))
            if not events:
                print(f"creepy history: {path}: not in any archive of tree {tree}",
                      file=sys.stderr)
                missing += 1
                continue
            newer = None        # (shown path, content) of the version printed before
            for kind, dump, st in events:
                where = shown(prefix, dump.path(inside))
                if kind == "removed":
                    out.write(f"removed {where}\n")
                    continue
                out.write(version_line(st, where, utc) + "\n")
                if diff and not st.mode & DMDIR:
                    old = await ar.read(dump.path(inside))
                    if newer is not None:
                        out.writelines(diff_lines(old, newer[1], where, newer[0]))
                    newer = (where, old)
    finally:
        await ar.close()
    return missing


def _archive_args(ap):
    """The options history and yesterday share: where the archive is and how to print it."""
    ap.add_argument("-a", metavar="addr", default=DEFAULT_RIP,
                    help=f"the rip serving the archive: dial string or posted name "
                         f"(default {DEFAULT_RIP})")
    ap.add_argument("-t", metavar="tree", help="the archived tree (default: the only one)")
    ap.add_argument("-p", metavar="prefix", default="",
                    help="print archive paths under prefix, where rip is mounted (e.g. /n/rip)")


def main_history(argv=None):
    ap = argparse.ArgumentParser(
        prog="creepy history",
        description="list the archived versions of a file, newest first (history(1))")
    _archive_args(ap)
    ap.add_argument("-u", action="store_true", help="print times in UTC")
    ap.add_argument("-D", action="store_true",
                    help="after each older version, print a diff from it to the newer one")
    ap.add_argument("path", nargs="+", help="a path inside the tree (usr/glenda/notes)")
    a = ap.parse_args(argv)
    try:
        missing = asyncio.run(history(sys.stdout, a.a, a.t, a.path, a.p, a.u, a.D))
    except HistoryError as e:
        print(f"creepy history: {e}", file=sys.stderr)
        return 1
    return 1 if missing else 0


# --- yesterday -------------------------------------------------------------------------------

async def yesterday(out, addr, tree, paths, day, n=None, prefix="", restore=False,
                    local=None, main=None):
    """Print (or restore) each path as archived on day; returns the number of failures."""
    ar = await Archive.connect(addr)
    failed = 0
    try:
        tree = await ar.tree(tree)
        dump = pick_dump(await ar.dumps(tree), day, n)
        if dump is None and n is None:
            raise HistoryError(f"no archive of tree {tree} on or before {day:%Y/%m/%d}")
        if dump is None:
            raise HistoryError(f"no archive {tree}/{day:%Y/%m%d}{f'.{n}' if n else ''}")
        for path in paths:
            inside = tree_path(path)
            rel = dump.path(inside)
            st = await ar.stat(rel)
            if st is None:
                print(f"creepy yesterday: {path}: not in {shown(prefix, dump.dir())}",
                      file=sys.stderr)
                failed += 1
                continue
            where = shown(prefix, rel)
            if not restore or (local is None and main is None):
                out.write(where + "\n")
                continue
            if st.mode & DMDIR:
                raise HistoryError(f"{where}: is a directory: -r restores files only")
            if local is not None:
                n_bytes = await _restore_local(ar, rel, local)
                out.write(f"restored {local} from {where} ({n_bytes} bytes)\n")
            else:
                n_bytes = await _restore_main(ar, rel, main, inside, st.mode & 0o777)
                out.write(f"restored /{inside} on {main} from {where} ({n_bytes} bytes)\n")
    finally:
        await ar.close()
    return failed


async def _copy(ar, rel, put):
    """Stream the archived file rel into put(offset, data); returns the bytes copied."""
    c = ar.c
    try:
        fid = await c.walkpath(rel)
    except Error9P as e:
        raise HistoryError(f"/{rel}: {e.ename}")
    try:
        await c.open(fid, OREAD)
        offset = 0
        while True:
            data = await c.read(fid, offset, c.iounit(fid))
            if not data:
                return offset
            await put(offset, data)
            offset += len(data)
    except Error9P as e:
        raise HistoryError(f"/{rel}: {e.ename}")
    finally:
        try:
            await c.clunk(fid)
        except (Error9P, ConnectionError):
            pass


async def _restore_local(ar, rel, local):
    """Copy into a local file: written beside it under a temporary name, then renamed, so a
    failed copy never leaves half a file where the old one was."""
    tmp = f"{local}.creepy-restore.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            async def put(offset, data):
                f.write(data)
            n = await _copy(ar, rel, put)
        os.replace(tmp, local)
    except OSError as e:
        _unlink_quietly(tmp)
        raise HistoryError(f"{local}: {e.strerror or e}")
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return n


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


async def _restore_main(ar, rel, addr, inside, perm):
    """Write the archived file back into the main server (attach "") at the same path:
    truncated if it is there, created with the archived permissions if not."""
    if not inside:
        raise HistoryError("-m restores a file, not the whole tree")
    m = await _connect(addr, "main server")
    try:
        try:
            fid = await m.walkpath(inside)
            try:
                await m.open(fid, OWRITE | OTRUNC)
            except BaseException:
                await m.clunk(fid)
                raise
        except Error9P as e:
            if e.ename not in MISSING:
                raise
            parent, name = posixpath.split(inside)
            fid = await m.walkpath(parent)
            try:
                await m.create(fid, name, perm, OWRITE)
            except BaseException:
                await m.clunk(fid)
                raise
        try:
            async def put(offset, data):
                if await m.write(fid, offset, data) != len(data):
                    raise HistoryError(f"{addr}: /{inside}: short write")
            n = await _copy(ar, rel, put)
        finally:
            await m.clunk(fid)
    except Error9P as e:
        raise HistoryError(f"restore into {addr}: /{inside}: {e.ename}")
    finally:
        await m.close()
    return n


def main_yesterday(argv=None):
    ap = argparse.ArgumentParser(
        prog="creepy yesterday",
        description="print (or restore) the archived path of a file for a day (yesterday(1))")
    _archive_args(ap)
    when = ap.add_mutually_exclusive_group()
    when.add_argument("-n", type=int, metavar="days",
                      help="the archive of this many days ago (default 1: yesterday)")
    when.add_argument("-d", type=parse_when, metavar="yyyymmdd[.n]",
                      help="the archive of this day (the newest on or before it); .n picks "
                           "that day's archive mmdd.n exactly, .0 its plain mmdd")
    ap.add_argument("-r", action="store_true",
                    help="restore: copy the archived file to -o file or into -m's server "
                         "(with neither, print the archived path to copy by hand)")
    dest = ap.add_mutually_exclusive_group()
    dest.add_argument("-o", metavar="file", help="with -r: the local file to write")
    dest.add_argument("-m", metavar="addr",
                      help="with -r: the main server (9pix) to write the file back into, at "
                           "the same path")
    ap.add_argument("path", nargs="+", help="a path inside the tree (usr/glenda/notes)")
    a = ap.parse_args(argv)
    if (a.o or a.m) and not a.r:
        ap.error("-o and -m go with -r")
    if a.o and len(a.path) > 1:
        ap.error("-o takes one path")
    if a.n is not None and a.n < 0:
        ap.error("-n takes a number of days ago, 0 or more")
    if a.d is not None:
        day, n = a.d
    else:
        day, n = datetime.date.today() - datetime.timedelta(days=1 if a.n is None else a.n), None
    try:
        failed = asyncio.run(yesterday(sys.stdout, a.a, a.t, a.path, day, n, a.p, a.r, a.o,
                                       a.m))
    except HistoryError as e:
        print(f"creepy yesterday: {e}", file=sys.stderr)
        return 1
    return 1 if failed else 0
