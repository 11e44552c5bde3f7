"""/cons, in process: commands split across writes, and what a client can make the console keep.

Whatever a client writes or leaves unread, the console keeps at most MAXLINE bytes per fid (an
unfinished line) and MAXLOG bytes of output shared by every reader; a write waiting for its
turn holds the bytes it came with and no more.
"""

import asyncio
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st

from creepy.errors import FsError
from creepy.fs import console
from creepy.fs.console import MAXLINE, MAXLOG, MAXREAD, PROMPT, Console
from creepy.fs.fs import ORDWR, OREAD, OWRITE, Fs
from creepy.store.disk import Disk
from creepy.store.store import Store

OWNER = "nemo"


@pytest.fixture
def fs(tmp_path):
    d = Disk.create(str(tmp_path / "disk"), 8 << 20)
    Store.format(d, owner=OWNER, bsize=4096)
    st = Store.open(d, cache_bytes=1 << 20)
    yield Fs(st, owner=OWNER, noauth=True)
    st.close()


def cons(fs, mode=ORDWR):
    f = fs.walk1(fs.attach(None, OWNER, "main"), "cons")
    fs.open(f, mode)
    return f


async def write(fs, f, data):
    r = fs.write(f, 0, data)
    return r if isinstance(r, int) else await r


def readall(fs, f):
    """What f may read now, without waiting."""
    out = b""
    while fs.console.readers[f].head or (fs.console.readers[f].pos
                                         < fs.console.logstart + len(fs.console.log)):
        out += fs.read(f, 0, 8192)
    return out


def test_commands_split_across_writes_run_whole(fs):
    async def main():
        f = cons(fs)
        assert await write(fs, f, b"una") == 3
        assert await write(fs, f, b"me\nus") == 5
        assert await write(fs, f, b"ers\n") == 4
        out = readall(fs, f).decode()
        assert out.startswith(PROMPT + "uname\nuid ") and f"\n{PROMPT}users\n0:none::\n" in out
        assert fs.console.partial == {}
    asyncio.run(main())


def test_a_line_longer_than_maxline_is_refused_and_nothing_of_that_write_runs(fs):
    async def main():
        f = cons(fs)
        readall(fs, f)
        for data in (b"sync\n" + b"x" * (MAXLINE + 1) + b"\nhalt\n",
                     b"halt\n" + b"y" * (1 << 20) + b"\n",
                     b"halt\n" + b"z" * (MAXLINE + 1)):
            with pytest.raises(FsError, match="console line too long"):
                fs.write(f, 0, data)
            assert readall(fs, f) == b"" and fs.console.partial == {}
        assert not fs.halted
        # a line of exactly MAXLINE bytes is a line like any other
        await write(fs, f, b"u" * MAXLINE + b"\n")
        assert readall(fs, f) == b"u" * MAXLINE + b"\n'" + b"u" * MAXLINE + b"'?\n" + PROMPT.encode()
    asyncio.run(main())


def test_an_unfinished_line_keeps_at_most_maxline_bytes(fs):
    async def main():
        f = cons(fs, OWRITE)
        await write(fs, f, b"# " + b"c" * (MAXLINE - 2))
        assert len(fs.console.partial[f]) == MAXLINE
        with pytest.raises(FsError, match="console line too long"):
            fs.write(f, 0, b"c")
        assert fs.console.partial == {}         # the line is forgotten, not run later
        await write(fs, f, b"sync\n")
        fs.clunk(f)
        assert fs.console.partial == {}
    asyncio.run(main())


def test_output_kept_is_bounded_however_many_readers_never_read(fs):
    async def main():
        lag = [cons(fs, OREAD) for _ in range(200)]
        w = cons(fs, OWRITE)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            cmd = b"q" * (MAXLINE - 1) + b"\n"      # echoed, then answered 'qqq...'?
            for _ in range(3000):                  # about 6 MB said in all
                await write(fs, w, cmd)
            grew = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert fs.console.logstart + len(fs.console.log) > 5 * MAXLOG
        assert len(fs.console.log) == MAXLOG
        assert grew < 2 * MAXLOG, grew
        # a reader that fell behind gets its prompt, then the oldest output still kept
        for f in (lag[0], lag[-1]):
            out = readall(fs, f)
            assert out.startswith(PROMPT.encode()) and out.endswith(PROMPT.encode())
            assert len(out) == len(PROMPT) + MAXLOG
    asyncio.run(main())


def test_writes_waiting_for_their_turn_hold_only_their_bytes(fs):
    """Sixteen writes of 64 KiB of two-byte commands queue behind a command that waits: they
    hold their 1 MiB of bytes, not a million decoded lines."""
    async def main():
        gate = asyncio.Event()

        async def wait(con, args):
            await gate.wait()
            return ["done"]
        fs.console.register("wait", "wait", wait, (0, 0))
        f = cons(fs, OWRITE)
        first = asyncio.ensure_future(fs.write(f, 0, b"wait\n"))
        await asyncio.sleep(0)
        data = b"a\n" * (32 << 10)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            queued = [asyncio.ensure_future(fs.write(f, 0, data)) for _ in range(16)]
            for _ in range(3):
                await asyncio.sleep(0)
            grew = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert not any(q.done() for q in queued)
        assert grew < 2 * len(data) * len(queued), grew     # at most two copies of their bytes
        for q in queued:
            q.cancel()
        gate.set()
        assert await first == 5
        await asyncio.gather(*queued, return_exceptions=True)
    asyncio.run(main())


def test_a_write_of_many_lines_lets_the_server_serve_others_between_them(fs, monkeypatch):
    """A write of 1 MiB of short lines is a quarter of a million commands: it runs a slice
    at a time (console.SLICE seconds), and the event loop serves others in between."""
    monkeypatch.setattr(console, "SLICE", 0)        # a turn after every line

    async def main():
        f = cons(fs, OWRITE)
        turns = 0
        done = False

        async def other():
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)
        t = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        assert await write(fs, f, b"who\n" * 200) == 800
        done = True
        await t
        assert turns >= 200
    asyncio.run(main())


def test_a_read_takes_at_most_maxread_bytes_of_the_output(fs):
    """Reads waiting for output on a connection whose client does not read its replies would
    each take a copy of the output (up to the whole log): one read takes at most MAXREAD."""
    async def main():
        r = cons(fs, OREAD)
        w = cons(fs, OWRITE)
        await write(fs, w, b"?\n" * 1000)
        said = fs.console.logstart + len(fs.console.log)
        assert said > 4 * MAXREAD
        assert fs.read(r, 0, 1 << 20) == PROMPT.encode()
        got = b""
        while len(got) < said:
            out = fs.read(r, 0, 1 << 20)
            assert 0 < len(out) <= MAXREAD
            got += out
        assert got == bytes(fs.console.log)
    asyncio.run(main())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, MAXLINE - 1, MAXLINE, MAXLINE + 1, 3 * MAXLINE])
                | st.integers(0, 3 * MAXLINE), max_size=8), st.booleans())
def test_a_write_is_refused_exactly_when_one_of_its_lines_is_too_long(lengths, ended):
    """The check looks at blocks, not lines (a megabyte of short lines is looked at in a
    millisecond): it must agree with the rule line by line, the unfinished last line too."""
    con = Console(None)
    f = type("Fid", (), {"user": OWNER})()
    text = b"\n".join(b"#" * n for n in lengths) + (b"\n" if ended else b"")
    try:
        r = con.write(f, text)
    except FsError:
        refused = True
    else:
        refused = False
        if not isinstance(r, int):
            asyncio.run(r)
    assert refused == any(n > MAXLINE for n in lengths)
    tail = b"" if ended or not lengths else b"#" * lengths[-1]
    assert con.partial.get(f, b"") == (b"" if refused else tail)
