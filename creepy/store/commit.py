"""The committer: the one state machine that freezes, writes, retries and sweeps.

Every path that puts a tree on the disk goes through here: the periodic sync, the console's
`sync`, a wstat that asks for stable storage, a write that finds the log short, halt.  Nothing
else allocates blocks, writes them, or starts a sweep (DESIGN invariants 1, 2 and 9).

States

    idle      nothing in flight; the newest commit is durable and recorded
    freezing  the dirty tree is being given addresses, on the event loop, a slice at a time;
              the tree layer holds back changes until it ends (readers keep being served)
    writing   the writer thread writes a commit: blocks, fsync, superblock, fsync (log.py)
    failed    a commit's write failed; the tree already points at its blocks, so it is written
              again, whole, before anything else happens (no freeze, no sweep)
    sweeping  the writer thread marks what is live; then the log starts a new lap (sweep.py)
    stopped   a run-time check of an invariant failed; nothing is written again, the tree is
              read-only, and `why` says what broke

Programs.  Each operation (sync, make_room, sweep) is a generator, a *program*, that does the
event loop's part itself and yields the disk's part as (function, args) for a driver to run.
`run` (asyncio) runs the disk's part on the writer thread and lets the loop serve between freeze
slices; `run_now` does everything on the calling thread (fmt, tools, tests).  One program runs
at a time, in the order asked.  A program that has started always finishes: callers wait for it
through asyncio.shield, so a flushed request or a client that hangs up stops waiting but never
stops the commit, and the store records whatever reached the disk.

Run-time checks (always on, as gefs does): an address handed out that is pending (a commit in
flight or failed) or inside the superblocks and mark areas, a block written outside the log, a
sweep asked for while a commit is unrecorded or failed, or a commit made durable by the writer
but not recorded on the loop, stops the committer with a message naming the fault, instead of
overwriting live data.
"""

import asyncio
import concurrent.futures
import time

from creepy.errors import EIO, DiskFull, FsError, StoreStopped
from creepy.store import sweep as sweepmod
from creepy.store.format import DATA, SUPER, encode_block, encode_super, now_ns
from creepy.store.log import write_commit

IDLE, FREEZING, WRITING, FAILED, SWEEPING, STOPPED = (
    "idle", "freezing", "writing", "failed", "sweeping", "stopped")

#: what a program yields to let the event loop serve between slices of a freeze
SLICE = None


class Commit:
    """One frozen tree on its way to the disk."""
    __slots__ = ("era", "blocks", "sb", "slot", "super_block", "freeze_s", "write_s")

    def __init__(self, era, blocks, sb, super_block):
        self.era = era
        self.blocks = blocks            # [(addr, type, payload)]
        self.sb = sb                    # the superblock as a dict
        self.slot = era % 2
        self.super_block = super_block  # the superblock encoded for its slot
        self.freeze_s = self.write_s = 0.0


class Freezer:
    """Hands out addresses to the blocks of one freeze and collects them for the commit."""

    def __init__(self, committer, era):
        self.c = committer
        self.era = era
        self.blocks = []

    def put(self, btype, payload, obj):
        """The frozen reference (addr, era) for a block whose payload is `payload` and whose
        decoded form (what readers get until it is written) is `obj`."""
        c = self.c
        addr = c.log.alloc()
        if addr in c.pending or addr < c.log.start:
            c.stop(f"double allocation: block {addr} is "
                   f"{'pending in a commit' if addr in c.pending else 'outside the log'}")
        self.blocks.append((addr, btype, payload))     # encoded on the writer thread
        c.pending[addr] = obj
        return (addr, self.era)


class Committer:
    def __init__(self, store):
        self.store = store
        self.blocks = store.blocks
        self.pending = store.blocks.pending
        self.log = store.log
        self.disk = store.disk
        self.bsize = store.bsize
        self.state = IDLE
        self.why = None                 # what stopped the committer
        self.failed = None              # the Commit whose write failed, to retry first
        self.partial = None             # the Freezer of a freeze that raised, to resume
        self.committed = store.sb       # the newest recorded commit's superblock
        self.durable_era = store.sb["era"]  # set by the writer thread after the last fsync
        self.swept_era = -1             # committed era when the last sweep ran
        # Blocks kept back for the commits of removes once the disk is full (none on a WORM,
        # where nothing is ever freed).
        lap = self.log.nblocks - self.log.start
        self.reserve = 0 if store.kind == "worm" else max(8, lap // 64)
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="creepy-writer")
        self._lock = None               # one program at a time (asyncio)
        self._jobs = set()
        self._thaw = []                 # futures of changes waiting for a freeze to end
        self.stats = {"syncs": 0, "sync_s": 0.0, "last_sync_s": 0.0, "freeze_s": 0.0,
                      "last_freeze_s": 0.0, "last_freeze_slices": 0, "blocks_written": 0,
                      "bytes_written": 0, "sync_errors": 0, "retries": 0, "sweeps": 0,
                      "sweep_s": 0.0, "last_sweep_s": 0.0, "swept_live": 0}

    # --- the two drivers ---------------------------------------------------------------------

    def run_now(self, program):
        """Run a program to its end on this thread; returns its value or raises."""
        value = exc = None
        while True:
            done, op = _step(program, value, exc)
            if done:
                return op
            value = exc = None
            if op is not SLICE:
                fn, args = op
                try:
                    value = fn(*args)
                except Exception as e:
                    exc = e

    async def run(self, program):
        """Run a program after those asked before it; the caller may stop waiting (it is
        cancelled), the program goes on to its end."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        job = asyncio.get_running_loop().create_task(self._job(program))
        self._jobs.add(job)
        job.add_done_callback(self._done)
        return await asyncio.shield(job)

    def _done(self, job):
        # A job whose caller stopped waiting: its failure was said already (store.say), and
        # nobody is left to be told.
        self._jobs.discard(job)
        if not job.cancelled():
            job.exception()

    async def _job(self, program):
        async with self._lock:
            loop = asyncio.get_running_loop()
            value = exc = None
            while True:
                done, op = _step(program, value, exc)
                if done:
                    return op
                value = exc = None
                if op is SLICE:
                    await asyncio.sleep(0)
                    continue
                fn, args = op
                fut = loop.run_in_executor(self.writer, fn, *args)
                try:
                    value = await asyncio.shield(fut)
                except asyncio.CancelledError:
                    # Only the loop's end cancels a job: the thread finishes regardless, and
                    # what it made durable is found by the next start-up.
                    program.close()
                    raise
                except Exception as e:
                    exc = e

    async def drain(self):
        """Wait for every program asked so far (halt, close)."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)

    def close(self):
        self.writer.shutdown(wait=True)

    # --- state ---------------------------------------------------------------------------------

    @property
    def freezing(self):
        return self.state == FREEZING

    async def thawed(self):
        """Wait until no freeze is under way (changes to the tree wait for this)."""
        while self.state == FREEZING:
            fut = asyncio.get_running_loop().create_future()
            self._thaw.append(fut)
            await fut

    def _end_freeze(self, state):
        self.state = state
        waiters, self._thaw = self._thaw, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def stop(self, why):
        """An invariant broke: write nothing more.  Raises StoreStopped."""
        if self.state != STOPPED:
            self.state = STOPPED
            self.why = why
            self.store.say(f"store stopped: {why}; the tree is read-only from now on")
        self._end_freeze(STOPPED)
        raise StoreStopped(self.why)

    def _check_running(self):
        if self.state == STOPPED:
            raise StoreStopped(self.why)

    @property
    def committed_era(self):
        return self.committed["era"]

    def short(self, use_reserve=False, more=0):
        """Too few free blocks for the next freeze plus `more` blocks (keeping the reserve for
        removes unless use_reserve).  When the quick bound says short, the tree settles and
        counts what the freeze would really write."""
        st = self.store
        limit = self.log.avail - more - (0 if use_reserve else self.reserve)
        if st.need_blocks() <= limit:
            return False
        if not st.settled:
            st.settle()
        return st.need_blocks() > limit

    def sweep_useful(self):
        """A sweep can only find garbage that a commit made since the last sweep."""
        return self.store.kind == "main" and self.committed_era != self.swept_era

    # --- programs ------------------------------------------------------------------------------

    def sync(self, use_reserve=False):
        """Program: commit the tree as it is now.  True if anything was written; DiskFull if
        even a sweep leaves too little room; FsError(EIO) if the write failed (it is retried
        first by the next program)."""
        self._check_running()
        wrote = False
        if self.failed is not None:
            yield from self._retry()
            wrote = True
        if not self.store.dirty:
            return wrote
        if self.short(use_reserve) and self.sweep_useful():
            yield from self._sweep()
        if self.short(use_reserve):
            raise DiskFull()
        commit = yield from self._freeze()
        yield from self._write(commit)
        return True

    def make_room(self, more=0, use_reserve=False):
        """Program: True when the next freeze and `more` blocks fit (outside the reserve unless
        use_reserve).  When they do not: sweep; if that is not enough, commit what is dirty
        (its old versions become garbage) and sweep again."""
        self._check_running()
        if self.failed is not None:
            yield from self._retry()
        for _ in range(3):                  # sweep, commit, sweep
            if not self.short(use_reserve, more):
                return True
            if self.sweep_useful():
                yield from self._sweep()
            elif self.store.dirty and not self.short(True):
                commit = yield from self._freeze()
                yield from self._write(commit)
            else:
                break
        return not self.short(use_reserve, more)

    def sweep(self):
        """Program: sweep now (tests and tools; the others sweep when the log is short)."""
        self._check_running()
        if self.failed is not None:
            yield from self._retry()
        yield from self._sweep()

    # --- steps ---------------------------------------------------------------------------------

    def _freeze(self):
        st = self.store
        if self.log.avail < st.need_blocks():
            raise DiskFull()
        t0 = time.perf_counter()
        self.state = FREEZING
        fz = self.partial or Freezer(self, st.era)
        self.partial = fz
        slices = 0
        try:
            steps = st.freeze_tree(fz)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    root_entry = done.value
                    break
                slices += 1
                yield SLICE
        except StoreStopped:
            raise
        except BaseException:
            self._end_freeze(IDLE)      # what it froze stays in self.partial for the next one
            raise
        self.partial = None
        sb = dict(self.committed)
        sb.update(era=fz.era, root=root_entry, nextpath=st.nextpath, nextspace=st.nextspace,
                  cursor=self.log.state(), sweep=self.log.sweep, stamp=now_ns())
        commit = Commit(fz.era, fz.blocks, sb,
                        encode_block(SUPER, fz.era % 2, fz.era, encode_super(sb), self.bsize))
        st.era = fz.era + 1
        st.froze()
        commit.freeze_s = time.perf_counter() - t0
        self.stats["freeze_s"] += commit.freeze_s
        self.stats["last_freeze_s"] = commit.freeze_s
        self.stats["last_freeze_slices"] = slices
        self._end_freeze(WRITING)
        return commit

    def _write(self, commit):
        self.state = WRITING
        self.failed = commit
        try:
            yield (self._write_commit, (commit,))
        except _Fault as e:
            self.stop(str(e))
        except OSError as e:
            self.state = FAILED
            self.stats["sync_errors"] += 1
            self.store.say(f"commit of era {commit.era} failed: {e.strerror or e}; "
                           f"it is written again before anything else")
            raise FsError(f"{EIO}: {e.strerror or e}") from e
        self.failed = None
        self._finish(commit)
        self.state = IDLE

    def _retry(self):
        self.stats["retries"] += 1
        yield from self._write(self.failed)

    def _write_commit(self, commit):
        """The disk half of a commit; runs on the writer thread."""
        lo, hi = self.log.start, self.log.nblocks
        for addr, _, _ in commit.blocks:
            if not lo <= addr < hi:
                raise _Fault(f"block {addr} of era {commit.era} lies outside the log")
        t0 = time.perf_counter()
        write_commit(self.disk, self.bsize, commit.era, commit.blocks, commit.super_block,
                     commit.slot)
        self.durable_era = commit.era
        commit.write_s = time.perf_counter() - t0

    def _finish(self, commit):
        """After the commit is durable: its metadata blocks become clean cache entries.  Its
        DATA blocks are let go: the kernel's page cache holds what was just written, and
        their memory serves the next writes (new memory costs page faults)."""
        era = commit.era
        pending, cache, size = self.pending, self.blocks.cache, self.blocks.mem_size
        for addr, btype, _ in commit.blocks:
            obj = pending.pop(addr, None)
            if obj is not None and btype != DATA:
                cache.put(addr, era, obj, size(btype, obj))
        self.committed = commit.sb
        st = self.stats
        st["syncs"] += 1
        st["last_sync_s"] = commit.freeze_s + commit.write_s
        st["sync_s"] += st["last_sync_s"]
        st["blocks_written"] += len(commit.blocks) + 1
        st["bytes_written"] += (len(commit.blocks) + 1) * self.bsize

    def _sweep(self):
        if self.failed is not None or self.pending:
            self.stop(f"sweep asked for while {len(self.pending)} blocks of a commit are not "
                      f"written")
        if self.durable_era != self.committed_era:
            self.stop(f"era {self.durable_era} is durable but era {self.committed_era} is "
                      f"the newest recorded commit")
        self.state = SWEEPING
        roots = self.store.sweep_roots()
        try:
            result = yield (sweepmod.sweep, (self.disk, self.committed, roots, self.store.era))
        except OSError as e:
            self.state = IDLE
            self.store.say(f"sweep failed: {e.strerror or e}")
            raise FsError(f"{EIO}: {e.strerror or e}") from e
        except BaseException:
            self.state = IDLE
            raise
        self._start_lap(result)
        self.state = IDLE

    def _start_lap(self, result):
        """Apply a finished sweep: the log goes round again, skipping the marked blocks."""
        self.log.new_lap(result.area, result.bits, self.store.era)
        self.swept_era = self.committed_era
        st = self.stats
        st["sweeps"] += 1
        st["sweep_s"] += result.secs
        st["last_sweep_s"] = result.secs
        st["swept_live"] = result.live


def _step(program, value, exc):
    """Advance a program by one step, sending it value or throwing exc into it: (True, the
    value it returned) once it has ended, else (False, what it yielded)."""
    try:
        return False, (program.throw(exc) if exc is not None else program.send(value))
    except StopIteration as stop:
        return True, stop.value


class _Fault(Exception):
    """A run-time check on the writer thread failed (turned into stop() on the loop)."""
