"""Who may change the tree, on the real server: the write group, the owner's hold on the console
and the users file, and Unix account names that gain nothing by themselves.

Over TCP with -a (any name is believed) and over the Unix socket without -a, where the server
believes the peer credentials: a child process becomes the Unix user (we run as root for these,
else they are skipped), connects, and hands the connected socket back to us.
"""

import os
import pwd
import shutil
import socket
import tempfile

import pytest

from creepy import errors as E
from creepy.fs.fs import unix_user
from peers import DMDIR, OREAD, ORCLOSE, ORDWR, OTRUNC, OWRITE, P9Error, Py9pPeer, connect
from servers import Server9pix

OWNER = unix_user()
MEMBER, OUTSIDER = "glenda", "mallory"          # names believed over TCP with -a
UNIX_MEMBER, UNIX_OUTSIDER = "bin", "sys"       # Unix accounts, believed by peer credentials

USERS = f"""# the write group: only its members change the tree
0:none::
!1:adm:{OWNER}:{OWNER}
2:{OWNER}:{OWNER}:
3:{MEMBER}:{MEMBER}:
4:{OUTSIDER}:{OUTSIDER}:
5:{UNIX_MEMBER}:{UNIX_MEMBER}:
6:{UNIX_OUTSIDER}:{UNIX_OUTSIDER}:
10:write::{OWNER},{MEMBER},{UNIX_MEMBER}
"""

USERS_REFUSED = "users file refused: "


def errs(fn, *args, **kw):
    with pytest.raises(P9Error) as ei:
        fn(*args, **kw)
    return ei.value.ename


def healthy(srv):
    srv.check_alive()
    assert "Traceback" not in srv.stderr, srv.stderr


def can_become(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return os.geteuid() == 0


def unix_peer(srv, name, aname=""):
    """A py9p peer on srv's Unix socket whose peer credentials are the Unix user name's."""
    pw = pwd.getpwnam(name)
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:                                # the child: become name, connect, hand over
        status = 1
        try:
            parent.close()
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(srv.unix)
            socket.send_fds(child, [b"s"], [s.fileno()])
            status = 0
        finally:
            os._exit(status)
    child.close()
    try:
        _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    finally:
        parent.close()
        _, status = os.waitpid(pid, 0)
    assert status == 0 and len(fds) == 1, f"{name} could not connect to {srv.unix}"
    sock = socket.socket(fileno=fds[0])
    sock.settimeout(60)
    return Py9pPeer(sock, name, aname)


def start(srv, world=False):
    """Start srv; with world, its socket is in a directory any Unix user may reach, mode 0666
    (the server makes it 0600: only its owner could connect)."""
    if world:
        d = tempfile.mkdtemp(prefix="creepy-access-")
        os.chmod(d, 0o755)
        srv.unix = os.path.join(d, "sock")
    srv.start()
    if world:
        os.chmod(srv.unix, 0o666)
    return srv


def stop(srv, world=False):
    srv.close()
    if world:
        shutil.rmtree(os.path.dirname(srv.unix), ignore_errors=True)


def console(srv, command):
    with connect(srv, "unix", "ours", OWNER, "main") as m:
        return m.client.cons(command)


# --- the write group --------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["tcp -a", "unix"])
def grouped(request, tmp_path_factory):
    """A server with USERS and a directory where the mode bits let anyone do anything."""
    auth = request.param == "unix"
    if auth and not all(can_become(n) for n in (UNIX_MEMBER, UNIX_OUTSIDER)):
        pytest.skip("needs root and the Unix accounts bin and sys")
    srv = start(Server9pix(tmp_path_factory.mktemp("grouped"), auth=auth), world=auth)
    try:
        with connect(srv, "unix", "ours", OWNER) as o:
            o.write_file("users", USERS.encode())
            o.mkdir("open", 0o777)
            o.wstat_path("open", mode=DMDIR | 0o777)      # create masked it with /root's 0775
        yield srv
        healthy(srv)
    finally:
        stop(srv, world=auth)


def peers_of(srv, name):
    if srv.auth:
        return [unix_peer(srv, name)]
    return [connect(srv, "tcp", kind, name) for kind in ("py9p", "ours")]


def each_client(srv, unix_name, tcp_name, prefix):
    """(name, tag, peer) for every client of the user, with victims(srv, tag, name) made."""
    name = unix_name if srv.auth else tcp_name
    for i, p in enumerate(peers_of(srv, name)):
        tag = f"{prefix}{i}"
        victims(srv, tag, name)
        yield name, tag, p


def victims(srv, tag, user):
    """open/TAG-f (0666, the owner's), open/TAG-d (0777, the owner's), open/TAG-own (0666,
    user's): mode bits that would let user change each of them every way."""
    with connect(srv, "unix", "ours", OWNER) as o:
        o.write_file(f"open/{tag}-f", b"the owner's", perm=0o666)
        o.wstat_path(f"open/{tag}-f", mode=0o666)
        o.mkdir(f"open/{tag}-d", 0o777)
        o.write_file(f"open/{tag}-own", b"user's", perm=0o666)
        o.wstat_path(f"open/{tag}-own", mode=0o666)
    console(srv, f"allow {OWNER}")
    try:
        with connect(srv, "unix", "ours", OWNER) as o:
            o.wstat_path(f"open/{tag}-own", uid=user)
    finally:
        console(srv, f"disallow {OWNER}")


def snapshot(srv, tag):
    with connect(srv, "unix", "ours", OWNER) as o:
        return sorted((s.name, s.mode, s.length, s.uid, s.mtime) for s in o.listdir("open")
                      if s.name.startswith(tag + "-")), o.read_file(f"open/{tag}-f")


def test_a_user_outside_the_write_group_changes_nothing(grouped):
    srv = grouped
    for name, tag, p in each_client(srv, UNIX_OUTSIDER, OUTSIDER, "out"):
        before = snapshot(srv, tag)
        with p:
            d = p.walk("open")
            assert errs(p.create, d, f"{tag}-new", 0o666, OWRITE) == E.EPERM
            assert errs(p.create, d, f"{tag}-newdir", DMDIR | 0o777, OREAD) == E.EPERM
            p.clunk(d)
            for target in (f"{tag}-f", f"{tag}-own"):
                for mode in (OWRITE, ORDWR, OREAD | OTRUNC, OREAD | ORCLOSE):
                    f = p.walk(f"open/{target}")
                    assert errs(p.open, f, mode) == E.EPERM, (target, mode)
                    p.clunk(f)
                for fields in ({"length": 0}, {"length": 100}, {"name": f"{target}.moved"},
                               {"mode": 0o600}, {"mtime": 12345}, {"gid": name}):
                    assert errs(p.wstat_path, f"open/{target}", **fields) == E.EPERM, fields
                assert errs(p.remove_path, f"open/{target}") == E.EPERM
            assert errs(p.wstat_path, f"open/{tag}-d", mode=DMDIR | 0o700) == E.EPERM
            assert errs(p.remove_path, f"open/{tag}-d") == E.EPERM
            # what changes nothing is still there for them: reading, and a wstat asking for
            # nothing (a request to commit)
            assert p.read_file(f"open/{tag}-f") == b"the owner's"
            p.wstat_path(f"open/{tag}-f")
        assert snapshot(srv, tag) == before


def test_members_of_the_write_group_change_what_the_mode_bits_allow(grouped):
    for name, tag, p in each_client(grouped, UNIX_MEMBER, MEMBER, "in"):
        with p:
            p.write_file(f"open/{tag}-new", b"created")
            p.mkdir(f"open/{tag}-newdir", 0o777)
            p.write_file(f"open/{tag}-f", b"rewritten")           # OTRUNC and write
            p.wstat_path(f"open/{tag}-f", length=3)
            p.wstat_path(f"open/{tag}-f", name=f"{tag}-f.moved")
            assert p.read_file(f"open/{tag}-f.moved") == b"rew"
            p.wstat_path(f"open/{tag}-own", mode=0o600, mtime=12345)
            f = p.walk(f"open/{tag}-own")
            p.open(f, OWRITE | ORCLOSE)
            p.write(f, 0, b"gone on clunk")
            p.clunk(f)
            assert not p.exists(f"open/{tag}-own")
            for n in (f"{tag}-f.moved", f"{tag}-new", f"{tag}-newdir", f"{tag}-d"):
                p.remove_path(f"open/{n}")
            assert [s.name for s in p.listdir("open") if s.name.startswith(tag + "-")] == []


# --- names alone --------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["tcp -a", "unix"])
def fresh(request, tmp_path_factory):
    """A server with no users file (the built-in table), a 0777 directory and a file of the
    owner's that its group may write."""
    auth = request.param == "unix"
    if auth and not all(can_become(n) for n in ("sys", "bin")):
        pytest.skip("needs root and the Unix accounts bin and sys")
    srv = start(Server9pix(tmp_path_factory.mktemp("fresh"), auth=auth), world=auth)
    try:
        with connect(srv, "unix", "ours", OWNER) as o:
            o.mkdir("open", 0o777)
            o.wstat_path("open", mode=DMDIR | 0o777)
            o.write_file("open/owners", b"the owner's", perm=0o664)
            o.wstat_path("open/owners", gid="adm", mode=0o664)
        yield srv
        healthy(srv)
    finally:
        stop(srv, world=auth)


@pytest.mark.parametrize("name", ["sys", "adm", "bin"])
def test_unix_account_names_gain_nothing(fresh, name):
    srv = fresh
    if srv.auth:
        if not can_become(name):
            pytest.skip(f"no Unix account {name}")
        peer, main = unix_peer(srv, name), unix_peer(srv, name, "main")
    else:
        peer, main = connect(srv, "tcp", "py9p", name), connect(srv, "tcp", "ours", name, "main")
    with peer as p, main as m:
        # whatever they create is none's: the name is not a user of the tree
        p.write_file(f"open/by-{name}", b"x", perm=0o644)
        assert p.stat_path(f"open/by-{name}").uid == "none"
        p.remove_path(f"open/by-{name}")
        f = p.walk("open/owners")                       # group adm may write it; not them
        assert errs(p.open, f, OWRITE) == E.EPERM
        p.clunk(f)
        assert errs(p.wstat_path, "open/owners", gid="none") == E.ENOTOWNER
        d = p.walk("")
        assert errs(p.create, d, "users", 0o666, OWRITE) == E.EPERM
        p.clunk(d)
        for mode in (OREAD, OWRITE):                    # the console is the owner's and adm's
            f = m.walk("cons")
            assert errs(m.open, f, mode) == E.EPERM
            m.clunk(f)
    assert f"user '{name}' is allowed" not in console(srv, "allow")
    assert console(srv, "users").splitlines() == ["0:none::", f"!1:adm:{OWNER}:{OWNER}",
                                                  f"2:{OWNER}:{OWNER}:"]


# --- the users file -----------------------------------------------------------------------

GOOD = f"""0:none::
!1:adm:{OWNER}:{OWNER}
2:{OWNER}:{OWNER}:
3:{MEMBER}:{MEMBER}:
"""


def table(srv):
    return console(srv, "users").splitlines()


def test_a_users_file_that_would_lock_the_owner_out_is_refused_across_restarts(tmp_path):
    srv = Server9pix(tmp_path)
    srv.start()
    try:
        with connect(srv, "tcp", "py9p", OWNER) as o:
            o.write_file("users", GOOD.encode())
            o.mkdir("open", 0o777)
            o.wstat_path("open", mode=DMDIR | 0o777)
            good = table(srv)
            assert f"3:{MEMBER}:{MEMBER}:" in good
            for bad, why in [
                (b"", "no users"),                                  # what touch leaves
                (b"# nobody\n", "no users"),
                (b"\x7fELF\x02\x01\x01\x00garbage", "line 1: want 4 ':'-separated fields"),
                (b"\xff\xfe\x00", "not UTF-8 text"),
                (f"3:{MEMBER}:{MEMBER}:\n".encode(), f"no line for the server's owner {OWNER!r}"),
                (GOOD.replace(f"2:{OWNER}", f"!2:{OWNER}").encode(), "is disabled"),
                (GOOD.encode() + f"9:write::{MEMBER}\n".encode(), "not in the write group"),
            ]:
                e = errs(o.write_file, "users", bad)
                assert e.startswith(USERS_REFUSED) and why in e, (bad, e)
                assert o.read_file("users") == GOOD.encode()        # the file is given back
                assert table(srv) == good
            # the same for a truncation by wstat, and an open with OTRUNC and no write
            assert errs(o.wstat_path, "users", length=0) == USERS_REFUSED + "no users"
            assert errs(o.wstat_path, "users", length=5) == (
                USERS_REFUSED + "line 1: want 4 ':'-separated fields, got 2")
            f = o.walk("users")
            o.open(f, OWRITE | OTRUNC)
            assert errs(o.clunk, f) == USERS_REFUSED + "no users"
            assert o.read_file("users") == GOOD.encode() and table(srv) == good
        assert "users file refused: no users; the table in force stays" in srv.stderr
        srv.stop()
        srv.start()
        assert table(srv) == good
        with connect(srv, "tcp", "ours", MEMBER) as g:                # still a user
            assert g.stat_path("users").length == len(GOOD)
            g.mkdir(f"open/{MEMBER}s", 0o755)
            assert g.stat_path(f"open/{MEMBER}s").uid == MEMBER
        healthy(srv)
    finally:
        srv.close()


def test_the_owner_always_reaches_the_console_and_the_users_file(tmp_path):
    """Even when the users file on disk is garbage (committed half-written, then a crash) and
    when the file's mode and owner shut the owner out."""
    srv = Server9pix(tmp_path)
    srv.start()
    try:
        with connect(srv, "tcp", "ours", OWNER) as o:
            o.write_file("users", GOOD.encode())
            f = o.walk("users")
            o.open(f, OWRITE | OTRUNC)
            o.write(f, 0, b"half a li")
            assert "synced" in console(srv, "sync")
            srv.kill()                                          # before the clunk
        srv.start()
        assert "/root/users refused: line 1: want 4 ':'-separated fields, got 1; using the built-in " \
               "users" in srv.stderr
        assert table(srv) == ["0:none::", f"!1:adm:{OWNER}:{OWNER}", f"2:{OWNER}:{OWNER}:"]
        with connect(srv, "tcp", "ours", OWNER) as o:
            assert o.read_file("users") == b"half a li"
            # a user the built-in table does not know owns the file, mode 0600: still the
            # owner's to rewrite
            console(srv, f"allow {OWNER}")
            o.wstat_path("users", mode=0o600, uid="none", gid="none")
            o.wstat_path("", mode=DMDIR | 0o700, uid="none", gid="none")
            console(srv, f"disallow {OWNER}")
            f = o.walk("users")
            o.open(f, OWRITE | OTRUNC)
            o.writeall(f, 0, GOOD.encode())
            o.clunk(f)
            assert o.read_file("users") == GOOD.encode()
        assert table(srv) == GOOD.splitlines()
        healthy(srv)
    finally:
        srv.close()


def test_a_refused_users_file_whose_writer_vanished_is_given_back_and_logged_in_one_line(
        tmp_path):
    srv = Server9pix(tmp_path)
    srv.start()
    try:
        with connect(srv, "tcp", "ours", OWNER) as o:
            o.write_file("users", GOOD.encode())
        p = connect(srv, "tcp", "py9p", OWNER)
        f = p.walk("users")
        p.open(f, OWRITE | OTRUNC)
        p.write(f, 0, b"\n")
        p.close()                                       # gone without a Tclunk
        srv.said("clunk failed: users file refused: no users\n")
        with connect(srv, "tcp", "ours", OWNER) as o:
            assert o.read_file("users") == GOOD.encode()
        assert table(srv) == GOOD.splitlines()
        healthy(srv)
    finally:
        srv.close()
