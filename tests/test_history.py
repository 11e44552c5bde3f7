"""`creepy history` and `creepy yesterday` give the right answers over a three-day archive.

The archive is built the way an administrator (or arch) builds one, in a real `creepy rip`:
the first day's tree is written through the wormwr attach, each later day starts as a console
`link` of the day before and is then changed in place.  Both commands run as subprocesses, as a
user would run them, and their output is checked line by line.

    t/2026/1119          notes v1, static, gone, back, touched
    t/2026/1120          notes v2, later appears, back removed
    t/2026/1121          notes v3, gone removed, back re-created
    t/2026/1121.1        notes v4, touched rewritten with its old length and mtime (qid.vers)
    t/2026/1122.partial  notes v5: an unfinished archive, ignored
"""

import calendar
import datetime
import os
import subprocess
import sys

import pytest

from creepy.ninep.client import SyncClient, nochange
from creepy.ninep.dial import getuser
from creepy.history import Dump, pick_dump, prtime, tree_path, versions, HistoryError
from servers import DEADLINE, Server9pix, creepy_env
from test_rip import RipServer

ME = getuser()


def T(day, hour, minute=0):
    """A time on November <day> 2026, UTC."""
    return calendar.timegm((2026, 11, day, hour, minute, 0))


def put(c, path, data, mtime):
    """Write a file and give it a known mtime (as arch does with the mtime it archives)."""
    c.write_file(path, data)
    st = nochange()
    st.mtime = mtime
    fid = c.walkpath(path)
    try:
        c.wstat(fid, st)
    finally:
        c.clunk(fid)


def link(cons, src, dst):
    reply = cons.cons(f"link {src} {dst}")
    assert reply.strip() == f"linked {src} {dst}", reply


NOTES = {"1119": b"notes v1\n", "1120": b"notes v2\n", "1121": b"notes v3\n",
         "1121.1": b"notes v4, longer\n", "1122.partial": b"notes v5\n"}
G = "t/2026/{}/usr/glenda/{}"


@pytest.fixture(scope="module")
def rip(tmp_path_factory):
    srv = RipServer(tmp_path_factory.mktemp("rip"))
    srv.start()
    w = SyncClient(srv.tcp_dial, aname="wormwr", timeout=DEADLINE)
    cons = SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE)
    try:
        for d in ("t", "t/2026", "t/2026/1119", "t/2026/1119/usr", "t/2026/1119/usr/glenda",
                  "t/2026/1119/lib", "scratch"):
            w.mkdir(d)
        w.write_file("README", b"not a tree: a file at the top\n")
        w.write_file("t/2026/notes.txt", b"not an archive: a file among the days\n")
        d = "1119"
        put(w, G.format(d, "notes"), NOTES[d], T(19, 9))
        put(w, G.format(d, "static"), b"never changes\n", T(19, 8))
        put(w, G.format(d, "gone"), b"short-lived\n", T(19, 10))
        put(w, G.format(d, "back"), b"first life\n", T(19, 11))
        put(w, G.format(d, "touched"), b"aaaa\n", T(19, 12))
        put(w, "t/2026/1119/lib/profile", b"bind -a $home/bin /bin\n", T(19, 7))

        link(cons, "t/2026/1119", "t/2026/1120")
        d = "1120"
        put(w, G.format(d, "notes"), NOTES[d], T(20, 9))
        put(w, G.format(d, "later"), b"appeared on the 20th\n", T(20, 11))
        w.remove_path(G.format(d, "back"))

        link(cons, "t/2026/1120", "t/2026/1121")
        d = "1121"
        put(w, G.format(d, "notes"), NOTES[d], T(21, 9))
        w.remove_path(G.format(d, "gone"))
        put(w, G.format(d, "back"), b"second life\n", T(21, 10))

        link(cons, "t/2026/1121", "t/2026/1121.1")
        d = "1121.1"
        put(w, G.format(d, "notes"), NOTES[d], T(21, 15))
        put(w, G.format(d, "touched"), b"bbbb\n", T(19, 12))   # same length, same mtime

        link(cons, "t/2026/1121.1", "t/2026/1122.partial")
        put(w, G.format("1122.partial", "notes"), NOTES["1122.partial"], T(22, 9))
        put(w, G.format("1122.partial", "newfile"), b"only in the partial archive\n", T(22, 9))
        assert "synced" in cons.cons("sync")
    finally:
        w.close()
        cons.close()
    yield srv
    srv.stop()


def run(*args, ok=True):
    """`python -m creepy args...` with TZ=UTC; (exit status, stdout lines, stderr)."""
    env = creepy_env()
    env["TZ"] = "UTC"
    r = subprocess.run([sys.executable, "-m", "creepy", *args], capture_output=True, text=True,
                       env=env, timeout=DEADLINE)
    if ok:
        assert r.returncode == 0, f"creepy {' '.join(args)}: {r.returncode}\n{r.stderr}"
    return r.returncode, r.stdout.splitlines(), r.stderr


def history(rip, *args, **kw):
    return run("history", "-a", rip.tcp_dial, *args, **kw)


def yesterday(rip, *args, **kw):
    return run("yesterday", "-a", rip.tcp_dial, *args, **kw)


def line(day, hour, dump, name, data, minute=0):
    return (f"{prtime(T(day, hour, minute), utc=True)} /t/2026/{dump}/usr/glenda/{name} "
            f"{len(data)} [{ME}]")


# --- history ---------------------------------------------------------------------------------

def test_history_lists_a_file_changed_every_day_once_per_archive_newest_first(rip):
    _, out, _ = history(rip, "usr/glenda/notes")
    assert out == [
        line(21, 15, "1121.1", "notes", NOTES["1121.1"]),
        line(21, 9, "1121", "notes", NOTES["1121"]),
        line(20, 9, "1120", "notes", NOTES["1120"]),
        line(19, 9, "1119", "notes", NOTES["1119"]),
    ]
    assert out[0] == f"Nov 21 15:00:00 UTC 2026 /t/2026/1121.1/usr/glenda/notes 17 [{ME}]"


def test_history_of_a_file_never_changed_is_one_line_naming_the_newest_archive(rip):
    _, out, _ = history(rip, "usr/glenda/static")
    assert out == [line(19, 8, "1121.1", "static", b"never changes\n")]


def test_history_marks_a_removed_file_and_keeps_its_last_version(rip):
    _, out, _ = history(rip, "usr/glenda/gone")
    assert out == ["removed /t/2026/1121/usr/glenda/gone",
                   line(19, 10, "1120", "gone", b"short-lived\n")]


def test_history_of_a_file_that_appeared_later_starts_where_it_appeared(rip):
    _, out, _ = history(rip, "usr/glenda/later")
    assert out == [line(20, 11, "1121.1", "later", b"appeared on the 20th\n")]


def test_history_of_a_file_removed_and_created_again_shows_both_lives(rip):
    _, out, _ = history(rip, "usr/glenda/back")
    assert out == [line(21, 10, "1121.1", "back", b"second life\n"),
                   "removed /t/2026/1120/usr/glenda/back",
                   line(19, 11, "1119", "back", b"first life\n")]


def test_history_tells_versions_apart_by_qid_version_when_length_and_mtime_agree(rip):
    _, out, _ = history(rip, "usr/glenda/touched")
    assert out == [line(19, 12, "1121.1", "touched", b"bbbb\n"),
                   line(19, 12, "1121", "touched", b"aaaa\n")]


def test_history_accepts_paths_as_the_main_server_shows_them(rip):
    _, want, _ = history(rip, "usr/glenda/notes")
    for path in ("/usr/glenda/notes", "/root/usr/glenda/notes", "usr/./glenda//notes",
                 "usr/glenda/x/../notes"):
        assert history(rip, path)[1] == want, path
    assert history(rip, "-t", "t", "usr/glenda/notes")[1] == want


def test_history_prints_paths_under_a_prefix_and_several_files_in_turn(rip):
    _, out, _ = history(rip, "-p", "/n/rip/", "usr/glenda/static", "lib/profile")
    assert out == [line(19, 8, "1121.1", "static", b"never changes\n").replace(
                       " /t/", " /n/rip/t/"),
                   f"Nov 19 07:00:00 UTC 2026 /n/rip/t/2026/1121.1/lib/profile 23 [{ME}]"]


def test_history_D_prints_what_each_older_version_became(rip):
    _, out, _ = history(rip, "-D", "usr/glenda/notes")
    a, b, c, d = "/t/2026/1121.1", "/t/2026/1121", "/t/2026/1120", "/t/2026/1119"
    n = "/usr/glenda/notes"
    assert out == [
        line(21, 15, "1121.1", "notes", NOTES["1121.1"]),
        line(21, 9, "1121", "notes", NOTES["1121"]),
        f"--- {b}{n}", f"+++ {a}{n}", "@@ -1 +1 @@", "-notes v3", "+notes v4, longer",
        line(20, 9, "1120", "notes", NOTES["1120"]),
        f"--- {c}{n}", f"+++ {b}{n}", "@@ -1 +1 @@", "-notes v2", "+notes v3",
        line(19, 9, "1119", "notes", NOTES["1119"]),
        f"--- {d}{n}", f"+++ {c}{n}", "@@ -1 +1 @@", "-notes v1", "+notes v2",
    ]


def test_history_of_a_file_in_no_archive_says_so_and_fails(rip):
    rc, out, err = history(rip, "usr/glenda/newfile", ok=False)
    assert rc == 1 and out == []
    assert err.strip() == "creepy history: usr/glenda/newfile: not in any archive of tree t"
    rc, out, err = history(rip, "../etc/passwd", ok=False)
    assert rc == 1 and "leaves the archived tree" in err


def test_history_u_prints_utc_whatever_the_zone(rip):
    env = creepy_env()
    env["TZ"] = "America/New_York"
    r = subprocess.run([sys.executable, "-m", "creepy", "history", "-u", "-a", rip.tcp_dial,
                        "usr/glenda/static"], capture_output=True, text=True, env=env,
                       timeout=DEADLINE)
    assert r.stdout.splitlines() == [line(19, 8, "1121.1", "static", b"never changes\n")]


# --- yesterday -------------------------------------------------------------------------------

def test_yesterday_d_names_the_newest_archive_of_that_day(rip):
    assert yesterday(rip, "-d", "20261120", "usr/glenda/notes")[1] == \
        ["/t/2026/1120/usr/glenda/notes"]
    assert yesterday(rip, "-d", "20261121", "usr/glenda/notes")[1] == \
        ["/t/2026/1121.1/usr/glenda/notes"]
    assert yesterday(rip, "-d", "20261121.0", "usr/glenda/notes")[1] == \
        ["/t/2026/1121/usr/glenda/notes"]
    assert yesterday(rip, "-d", "20261121.1", "/root/usr/glenda/notes")[1] == \
        ["/t/2026/1121.1/usr/glenda/notes"]


def test_yesterday_takes_the_newest_archive_before_a_day_without_one_never_a_partial(rip):
    _, out, _ = yesterday(rip, "-d", "20261225", "usr/glenda/notes", "usr/glenda/static")
    assert out == ["/t/2026/1121.1/usr/glenda/notes", "/t/2026/1121.1/usr/glenda/static"]


def test_yesterday_n_counts_days_back_from_today(rip):
    ago = (datetime.date.today() - datetime.date(2026, 11, 20)).days
    if ago < 0:
        pytest.skip("this machine's clock is before the archive's days")
    _, out, _ = yesterday(rip, "-n", str(ago), "usr/glenda/later")
    assert out == ["/t/2026/1120/usr/glenda/later"]
    # no -n or -d: yesterday, that is the newest archive made on or before yesterday
    ago = ago - 1 if ago > 0 else 0
    want = "1120" if ago == 0 else "1121.1"
    _, out, _ = yesterday(rip, "-p", "/n/rip", "usr/glenda/later")
    assert out == [f"/n/rip/t/2026/{want}/usr/glenda/later"], f"today is {datetime.date.today()}"


def test_yesterday_fails_cleanly_for_a_missing_file_day_or_tree(rip):
    rc, out, err = yesterday(rip, "-d", "20261121", "usr/glenda/gone", ok=False)
    assert (rc, out) == (1, [])
    assert err.strip() == "creepy yesterday: usr/glenda/gone: not in /t/2026/1121.1"
    rc, out, err = yesterday(rip, "-d", "20261118", "usr/glenda/notes", ok=False)
    assert (rc, out) == (1, [])
    assert err.strip() == "creepy yesterday: no archive of tree t on or before 2026/11/18"
    rc, out, err = yesterday(rip, "-d", "20261120.3", "usr/glenda/notes", ok=False)
    assert err.strip() == "creepy yesterday: no archive t/2026/1120.3"
    rc, out, err = yesterday(rip, "-t", "nope", "-d", "20261120", "x", ok=False)
    assert err.strip() == "creepy yesterday: no tree 'nope' in the archive (trees: t)"
    rc, _, err = yesterday(rip, "-d", "2026-11-20", "x", ok=False)
    assert rc == 2 and "bad date" in err


def test_yesterday_r_without_a_destination_prints_the_path_to_copy(rip):
    assert yesterday(rip, "-r", "-d", "20261119", "usr/glenda/gone")[1] == \
        ["/t/2026/1119/usr/glenda/gone"]


def test_yesterday_r_o_restores_the_archived_version_to_a_local_file(rip, tmp_path):
    dest = tmp_path / "notes.old"
    dest.write_bytes(b"to be replaced, longer than any archived version\n")
    _, out, _ = yesterday(rip, "-r", "-o", str(dest), "-d", "20261119", "usr/glenda/notes")
    assert dest.read_bytes() == NOTES["1119"]
    assert out == [f"restored {dest} from /t/2026/1119/usr/glenda/notes (9 bytes)"]
    assert sorted(os.listdir(tmp_path)) == ["notes.old"]      # no temporary left behind
    rc, _, err = yesterday(rip, "-r", "-o", str(tmp_path / "x"), "-d", "20261119", "usr",
                           ok=False)
    assert rc == 1 and "is a directory" in err


def test_yesterday_r_m_writes_the_archived_version_back_into_the_main_server(rip, tmp_path):
    main = Server9pix(tmp_path, size="16M", bsize="4K")
    main.start()
    try:
        with SyncClient(main.tcp_dial, timeout=DEADLINE) as c:
            c.mkdir("usr")
            c.mkdir("usr/glenda")
            c.write_file("usr/glenda/notes", b"today's notes, to be replaced by the 20th's\n")
        _, out, _ = yesterday(rip, "-r", "-m", main.tcp_dial, "-d", "20261120",
                              "/root/usr/glenda/notes", "usr/glenda/gone")
        assert out == [
            f"restored /usr/glenda/notes on {main.tcp_dial} from "
            f"/t/2026/1120/usr/glenda/notes (9 bytes)",
            f"restored /usr/glenda/gone on {main.tcp_dial} from "
            f"/t/2026/1120/usr/glenda/gone (12 bytes)"]
        with SyncClient(main.tcp_dial, timeout=DEADLINE) as c:
            assert c.read_file("usr/glenda/notes") == NOTES["1120"]
            assert c.read_file("usr/glenda/gone") == b"short-lived\n"
            assert c.stat_path("usr/glenda/gone").mode & 0o777 == 0o644
        rc, _, err = yesterday(rip, "-r", "-m", main.tcp_dial, "-d", "20261120",
                               "lib/profile", ok=False)
        assert rc == 1 and "restore into" in err and "file does not exist" in err
    finally:
        main.stop()


def test_the_only_tree_is_the_default_and_two_trees_need_t(tmp_path):
    srv = RipServer(tmp_path)
    srv.start()
    try:
        rc, _, err = run("history", "-a", srv.tcp_dial, "x", ok=False)
        assert rc == 1
        assert err.strip() == "creepy history: the archive holds no trees (no " \
                              "/<tree>/<yyyy>/<mmdd>)"
        with SyncClient(srv.tcp_dial, aname="wormwr", timeout=DEADLINE) as w:
            for tree in ("main", "other"):
                for d in (tree, f"{tree}/2026", f"{tree}/2026/0101"):
                    w.mkdir(d)
                put(w, f"{tree}/2026/0101/f", tree.encode(), T(1, 0))
        rc, _, err = run("history", "-a", srv.tcp_dial, "f", ok=False)
        assert err.strip() == "creepy history: the archive holds 2 trees (main, other): " \
                              "name one with -t"
        _, out, _ = run("history", "-a", srv.tcp_dial, "-t", "other", "f")
        assert out == [f"Nov  1 00:00:00 UTC 2026 /other/2026/0101/f 5 [{ME}]"]
    finally:
        srv.stop()


# --- the pure parts --------------------------------------------------------------------------

class St:
    def __init__(self, mtime, vers, length):
        self.mtime, self.length = mtime, length
        self.qid = type("Q", (), {"vers": vers})()


def test_archive_names_order_by_day_then_number_and_reject_what_is_not_an_archive():
    names = ["1121.10", "1121", "1121.2", "0101", "1121.1"]
    dumps = sorted((Dump("t", "2026", n) for n in names), key=lambda d: d.key)
    assert [d.name for d in dumps] == ["2026/0101", "2026/1121", "2026/1121.1", "2026/1121.2",
                                       "2026/1121.10"]
    for bad in ("1121.partial", "1121.1.partial", "1345", "0230", "notes", "112"):
        with pytest.raises(ValueError):
            Dump("t", "2026", bad)
    assert pick_dump(dumps, datetime.date(2026, 11, 21)).name == "2026/1121.10"
    assert pick_dump(dumps, datetime.date(2026, 11, 21), 0).name == "2026/1121"
    assert pick_dump(dumps, datetime.date(2026, 6, 1)).name == "2026/0101"
    assert pick_dump(dumps, datetime.date(2025, 12, 31)) is None


def test_versions_group_runs_and_mark_removals():
    d = [Dump("t", "2026", f"11{i:02d}") for i in range(1, 8)]
    a, a2, b = St(1, 3, 10), St(1, 4, 10), St(2, 4, 10)
    found = list(zip(d, [None, a, a, a2, None, None, b]))
    assert versions(found) == [("version", d[6], b), ("removed", d[4], None),
                               ("version", d[3], a2), ("version", d[2], a)]
    assert versions(list(zip(d, [None] * 7))) == []


def test_tree_paths():
    assert tree_path("/root/usr/glenda/notes") == "usr/glenda/notes"
    assert tree_path("usr/glenda/notes/") == "usr/glenda/notes"
    assert tree_path("/root") == tree_path("/") == tree_path(".") == ""
    assert tree_path("/rootless/x") == "rootless/x"
    with pytest.raises(HistoryError):
        tree_path("a/../../b")
