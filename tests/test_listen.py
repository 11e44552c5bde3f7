"""Where 9pix listens: every -A and -S value it cannot use is one line on stderr and exit
status 2, never a traceback; with -a nothing but loopback is ever bound.

The command runs for real for each value a user might type; the parser and the listen path are
also fuzzed in process (hypothesis), binding only loopback addresses and paths in a temporary
directory."""

import asyncio
import os
import socket
import subprocess
import sys
import types

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from creepy import ninepix
from creepy.ninep import dial
from creepy.ninep.server import Server
from servers import DEADLINE, creepy_env, format_disk, free_port


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    d = tmp_path_factory.mktemp("listen")
    format_disk(d / "disk", size="8M", bsize="4K")
    (d / "afile").write_bytes(b"")
    (d / "adir").mkdir()
    (d / "nsfile").write_bytes(b"")
    (d / "nsopen").mkdir()
    os.chmod(d / "nsopen", 0o777)
    return d


def run9pix(place, args, namespace=None):
    """creepy 9pix args disk; a flag missing its value goes after the disk (which it would
    take for its value otherwise)."""
    env = creepy_env()
    env["XDG_DATA_HOME"] = str(place / "xdg")          # a default disk would go there
    env["NAMESPACE"] = str(namespace or place / "ns")
    disk = [str(place / "disk")]
    argv = disk + args if args[-1:] in (["-A"], ["-S"]) else args + disk
    return subprocess.run([sys.executable, "-m", "creepy", "9pix", *argv],
                          capture_output=True, text=True, env=env, timeout=DEADLINE)


def localhost_dot_resolves():
    try:
        socket.getaddrinfo("localhost.", 1)
        return True
    except OSError:
        return False


CASES = [
    # the two of issue 8: a name that does not resolve, an address that cannot be bound
    ("-a", "-A", "tcp!localhost.!{port}"),
    ("-a", "-A", "tcp!::ffff:127.0.0.1!{port}"),
    ("-A", "tcp!::ffff:127.0.0.1!{port}"),
    ("-a", "-A", "tcp!localhost..!{port}"),
    ("-a", "-A", "tcp!::1%nosuchif!{port}"),
    ("-a", "-A", "tcp!127.0.0.1!{port}", "-A", "tcp!127.0.0.1!{port}"),     # in use
    ("-A", "tcp!127.0.0.1!{port}", "-A", "127.0.0.1:{port}"),
    # beyond loopback with -a
    ("-a", "-A", "tcp!*!{port}"),
    ("-a", "-A", "tcp!10.1.2.3!{port}"),
    ("-a", "-A", "tcp!example.org!{port}"),
    ("-a", "-A", "[::]:{port}"),
    # not a dial string
    ("-a", "-A", ""),
    ("-a", "-A", "udp!127.0.0.1!{port}"),
    ("-a", "-A", "tcp!127.0.0.1!65536"),
    ("-a", "-A", "tcp!127.0.0.1!nosuchservice"),
    ("-a", "-A", "tcp!127.0.0.1!1!2"),
    ("-a", "-A", "[::1"),
    ("-a", "-A", "unix!"),
    ("-a", "-A", " tcp!127.0.0.1!1"),
    # sockets that cannot be made
    ("-a", "-A", "unix!{dir}/no/such/dir/sock"),
    ("-a", "-A", "unix!{dir}/" + "x" * 120),
    ("-a", "-A", "{dir}/adir"),
    ("-a", "-A", "{dir}/afile"),
    ("-a", "-S", ""),
    ("-a", "-S", "{dir}/no/such/dir/sock"),
    ("-a", "-S", "{dir}/afile"),
    ("-a", "-S", "{dir}/live"),
    ("-a", "-S", "name", "NS={dir}/nsfile"),               # the name space is a file
    ("-a", "-S", "name", "NS={dir}/nsopen"),               # others may write it
    ("-a", "-A", "name", "NS={dir}/nsfile"),
    # flags without their value, numbers out of range
    ("-a", "-S"),
    ("-a", "-A"),
    ("-a", "-m", "100"),
    ("-a", "-i", "0"),
    ("-a", "-i", "nan"),
    ("-a", "-c", "0"),
    ("-a", "-c", "lots"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c))
def test_a_value_that_cannot_be_used_is_one_line_and_status_2(place, case):
    if "localhost." in " ".join(case) and localhost_dot_resolves():
        pytest.skip("localhost. resolves here")
    port = free_port()
    ns = None
    args = []
    for a in case:
        a = a.format(port=port, dir=place)
        if a.startswith("NS="):
            ns = a[3:]
        else:
            args.append(a)
    live = None
    if "-S" in args and args[-1].endswith("/live"):
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        live.bind(args[-1])
        live.listen()
    try:
        r = run9pix(place, args, ns)
    finally:
        if live is not None:
            live.close()
            os.unlink(args[-1])
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("creepy 9pix: ") and "Traceback" not in r.stderr, r.stderr
    assert not (place / "xdg").exists()                     # no default disk was made


def test_good_values_still_serve(place):
    """The same path of the program, with values that work: it listens, then SIGTERM stops it."""
    port = free_port()
    env = creepy_env()
    env["NAMESPACE"] = str(place / "ns-good")
    p = subprocess.Popen([sys.executable, "-m", "creepy", "9pix", "-a", "-A",
                          f"tcp!localhost!{port}", "-A", "tcp!127.0.0.1!0", "-S", "posted",
                          str(place / "disk")], stderr=subprocess.PIPE, text=True, env=env)
    try:
        said = []
        for line in p.stderr:
            said.append(line)
            if " serving " in line:
                break
        text = "".join(said)
        assert f"listening on tcp!localhost!{port}" in text, text
        assert "listening on tcp!127.0.0.1!0" not in text, text    # the port it got instead
        assert f"posted {place}/ns-good/posted" in text, text
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
    finally:
        p.terminate()
        rest = p.stderr.read()
        assert p.wait(DEADLINE) == 0, rest
    assert not os.path.exists(place / "ns-good" / "posted")


# --- fuzzing, in process ------------------------------------------------------------------------

HOSTS = ["localhost", "localhost.", "LocalHost", "127.0.0.1", "127.1", "127.255.255.254", "::1",
         "[::1]", "::ffff:127.0.0.1", "::ffff:7f00:1", "0:0:0:0:0:0:0:1", "::1%lo",
         "::1%nosuchif", "127.0.0.1%lo", "localhost..", "", "*", "0.0.0.0", "::", "[::",
         "10.0.0.1", "example.org", "local host", "lo\x00calhost", "ĺocalhost", "xn--"]
PORTS = ["0", "9fs", "65535", "65536", "-1", "", "http", "nosuchservice", "0000000000001",
         "१२३", "5640x"]


def dialstrings(tmp):
    host = st.sampled_from(HOSTS) | st.text(max_size=12)
    port = st.sampled_from(PORTS) | st.integers(0, 70000).map(str)
    net = st.sampled_from(["tcp", "net", "unix", "udp", "TCP", ""])
    name = st.text(st.sampled_from("ab/_-.é\x00 !:"), max_size=110)
    return st.one_of(
        st.builds(lambda n, h, p: f"{n}!{h}!{p}", net, host, port),
        st.builds(lambda n, h: f"{n}!{h}", net, host),
        st.builds(lambda h, p: f"{h}:{p}", host, port),
        st.builds(lambda h, p: f"[{h}]:{p}", host, port),
        st.builds(lambda n: f"unix!{tmp}/{n}", name),
        st.builds(lambda n: f"{tmp}/{n}", name),
        name,
        st.text(max_size=40),
    )


def inside(path, tmp):
    """Only absolute paths under tmp are bound (a relative one would be in our cwd)."""
    return os.path.isabs(path) and os.path.normpath(path).startswith(tmp + os.sep)


@pytest.mark.parametrize("noauth", [True, False])
def test_fuzz_the_listen_path_never_raises_anything_but_a_one_line_usage_error(tmp_path, noauth):
    tmp = str(tmp_path)
    os.makedirs(os.path.join(tmp, "ns"), mode=0o700)
    (tmp_path / "afile").write_bytes(b"")

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=dialstrings(tmp), srv=st.none() | st.sampled_from(["", "p", f"{tmp}/afile"])
           | st.text(st.sampled_from("ab/"), max_size=8))
    def one(text, srv):
        old = os.environ.get("NAMESPACE")
        os.environ["NAMESPACE"] = os.path.join(tmp, "ns")
        try:
            a = types.SimpleNamespace(A=[text], S=srv, a=noauth)
            try:
                addrs, posted = ninepix.listen_plan(a, False)
            except ninepix.UsageError as e:
                assert "\n" not in str(e)
                return
            for ad in addrs:
                assert ad.kind in ("tcp", "unix")
                if ad.kind == "unix" and not inside(ad.path, tmp):
                    return                                  # never make sockets outside tmp
                if ad.kind == "tcp" and not dial.is_loopback(ad):
                    assert not noauth
                    return                                  # never bind beyond loopback
            if posted is not None and not inside(posted, tmp):
                return
            asyncio.run(listen_once(addrs, posted, noauth))
        finally:
            if old is None:
                os.environ.pop("NAMESPACE", None)
            else:
                os.environ["NAMESPACE"] = old

    one()


async def listen_once(addrs, posted, noauth):
    server = Server(object())
    try:
        said = await ninepix.listen(server, addrs, posted, noauth)
        assert len(said) == len(addrs) + (posted is not None)
    except ninepix.UsageError as e:
        assert "\n" not in str(e), str(e)
    finally:
        await server.close()


def test_with_a_a_host_name_must_resolve_to_loopback_only(monkeypatch):
    real = socket.getaddrinfo

    def lying(host, *args, **kw):
        if host == "localhost":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", args[0] or 0))]
        return real(host, *args, **kw)

    async def main():
        ad = dial.parse(f"tcp!localhost!{free_port()}")
        server = Server(object())
        try:
            with pytest.raises(ninepix.UsageError, match="localhost resolves to 10.9.8.7, "
                                                          "beyond loopback"):
                await ninepix.listen(server, [ad], None, True)
            assert server._listeners == []
        finally:
            await server.close()
    monkeypatch.setattr(socket, "getaddrinfo", lying)
    asyncio.run(main())


@given(st.text(max_size=60))
@settings(max_examples=2000, deadline=None)
def test_fuzz_parse_gives_an_address_or_a_value_error(text):
    try:
        ad = dial.parse(text)
    except ValueError as e:
        assert "\n" not in str(e) or "\n" in text
        return
    assert ad.kind in ("tcp", "unix")
    if ad.kind == "tcp":
        assert 0 <= ad.port <= 65535 and ad.host and not any(c.isspace() for c in ad.host)
    else:
        assert ad.path


@pytest.mark.parametrize("euid", [0, 1000])
def test_default_addresses_of_9pix_and_rip_never_collide(monkeypatch, tmp_path, euid):
    # Started with no -A and no -S, 9pix and rip each post their own name and listen on
    # different TCP ports, as root (9pix on 9fs's 564) and as anyone else.
    monkeypatch.setattr(ninepix, "_namespace", lambda what: str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    a = types.SimpleNamespace(A=[], S=None, a=False)
    main_addrs, main_posted = ninepix.listen_plan(a, False)
    worm_addrs, worm_posted = ninepix.listen_plan(a, True)
    assert [ad.port for ad in main_addrs] == [564 if euid == 0 else 5640]
    assert [ad.port for ad in worm_addrs] == [5641]
    assert all(dial.is_loopback(ad) for ad in main_addrs + worm_addrs)
    assert os.path.basename(main_posted) == "9pix" and os.path.basename(worm_posted) == "rip"
