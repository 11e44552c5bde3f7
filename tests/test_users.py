"""The users table: file format, membership, the write group, permission checks."""

import itertools

import pytest

from creepy.fs.users import AEXEC, AREAD, AWRITE, MAXFILE, MAXNAME, User, Users, UsersError

FOSSIL = """\
# a fossil-style file: the uid field is a name
adm:adm:adm:sys,glenda
none:none::
sys:sys::glenda
glenda:glenda:glenda:
"""

KFS = """\
-1:adm:adm:glenda
0:none::
1:tor:tor:
10000:sys::
10001:upas:upas:
10002:bootes:bootes:
2:glenda:glenda:
3:dev:glenda:tor , bootes,
!4:mallory::
5:write::glenda,tor
"""


def test_parse_format_round_trip_is_canonical():
    t = Users.parse(KFS)
    text = t.format()
    assert Users.parse(text).format() == text
    assert text.splitlines() == [
        "-1:adm:adm:glenda",
        "0:none::",
        "1:tor:tor:",
        "2:glenda:glenda:",
        "3:dev:glenda:tor,bootes",
        "!4:mallory::",
        "5:write::glenda,tor",
        "10000:sys::",
        "10001:upas:upas:",
        "10002:bootes:bootes:",
    ]


def test_fossil_style_uids_are_accepted_and_sort_after_numbers():
    t = Users.parse(FOSSIL)
    assert t.names() == ["adm", "glenda", "none", "sys"]
    assert t.lookup("adm") == User("adm", "adm", "adm", ("sys", "glenda"))
    assert [line.split(":")[0] for line in t.format().splitlines()] == ["adm", "glenda", "none", "sys"]


def test_comments_blank_lines_and_blanks_around_fields_are_ignored():
    t = Users.parse("\n  # only a comment\n 1 : a : a : b ,  c  # trailing\n2:b::\r\n3:c::\n\n")
    assert t.lookup("a") == User("1", "a", "a", ("b", "c"))
    assert t.format() == "1:a:a:b,c\n2:b::\n3:c::\n"


def test_members_keep_the_order_given_and_repeats_collapse():
    t = Users.parse("1:g::c,a,b,a,\n2:a::\n3:b::\n4:c::\n")
    assert t.lookup("g").members == ("c", "a", "b")


@pytest.mark.parametrize("text, line, words", [
    ("1:a:a:\n2:b:b\n", 2, "4 ':'-separated fields"),
    ("1:a:a:\n2:b:b::\n", 2, "4 ':'-separated fields"),
    ("1:a::\n2::b:\n", 2, "empty name"),
    ("1:a::\n\n# x\n2:b c::\n", 4, "bad character"),
    ("1:a\x01b::\n", 1, "bad character"),
    ("1:" + "x" * (MAXNAME + 1) + "::\n", 1, "longer than"),
    ("1:a::\n2:a::\n", 2, "already defined at line 1"),
    ("1:a::\n1:b::\n", 2, "uid 1 already used"),
    ("1:a::\n01:b::\n", 2, "uid 1 already used"),
    ("1:a::\nb c:b::\n", 2, "bad uid"),
    ("1:a::\n2:b:zed:\n", 2, "unknown user 'zed'"),
    ("1:a::b,\n2:b::c\n", 2, "unknown user 'c'"),
])
def test_bad_lines_are_named(text, line, words):
    with pytest.raises(UsersError) as e:
        Users.parse(text)
    assert e.value.line == line
    assert str(e.value).startswith(f"line {line}: ")
    assert words in str(e.value)


def test_names_up_to_64_bytes_of_utf8_are_fine():
    name = "é" * (MAXNAME // 2)
    assert Users.parse(f"1:{name}::\n").exists(name)
    with pytest.raises(UsersError):
        Users.parse(f"1:{name}x::\n")


def test_reload_keeps_the_old_table_on_error_and_prunes_allowed():
    t = Users.parse(KFS)
    t.allow("tor")
    t.allow("glenda")
    before = t.format()
    with pytest.raises(UsersError):
        t.reload("1:a::\nbroken\n")
    assert t.format() == before and t.allowed == {"tor", "glenda"}
    t.reload(KFS.replace("1:tor:tor:", "!1:tor:tor:"))
    assert t.allowed == {"glenda"}
    assert not t.enabled("tor")


def test_disabled_users_exist_but_cannot_resolve_or_belong():
    t = Users.parse(KFS)
    assert t.exists("mallory") and not t.enabled("mallory")
    assert not t.exists("nobody") and not t.enabled("nobody")
    assert not t.ismember("mallory", "mallory")
    with pytest.raises(UsersError, match="user not found"):
        t.allow("mallory")
    # a disabled owner gets only the "other" bits on its own files
    assert not t.access("mallory", "mallory", "mallory", 0o700, AREAD)
    assert t.access("mallory", "mallory", "mallory", 0o704, AREAD)


def test_membership_and_leadership():
    t = Users.parse(KFS)
    assert t.ismember("glenda", "glenda")  # a user is its own group
    assert t.ismember("glenda", "dev")  # the leader, not in the member list
    assert t.ismember("tor", "dev") and t.ismember("bootes", "dev")
    assert not t.ismember("upas", "dev")
    assert not t.ismember("tor", "nosuchgroup")
    assert t.isleader("glenda", "dev")
    assert not t.isleader("tor", "dev")  # a member, but dev has a leader
    assert t.isleader("glenda", "write") and t.isleader("tor", "write")  # no leader: any member
    assert not t.isleader("upas", "write")
    assert t.groups("glenda") == ["adm", "dev", "write"]
    assert t.groups("tor") == ["dev", "write"]


def test_write_group_limits_who_may_modify():
    t = Users.parse(KFS)
    assert t.canwrite("glenda") and t.canwrite("tor") and t.canwrite("write")
    assert not t.canwrite("upas") and not t.canwrite("nobody")
    t.allow("upas")
    assert t.canwrite("upas")
    assert Users.parse(FOSSIL).canwrite("none")  # no write group: nobody is stopped by it


def reference_access(table, user, owner, group, mode, want, allowed):
    """Plan 9's rule restated bit by bit: each wanted bit must be granted by one class
    that applies to the user, and that one class must grant all the others too."""
    if user in allowed:
        return True
    classes = [mode & 7]
    known = user in table and table[user]["enabled"] and user != "none"   # fossil: none is other
    if known and (user == group or (group in table and (
            user == table[group]["leader"] or user in table[group]["members"]))):
        classes.append((mode >> 3) & 7)
    if known and user == owner:
        classes.append((mode >> 6) & 7)
    wanted = [bit for bit in (4, 2, 1) if want & bit]
    return any(all(c & bit for bit in wanted) for c in classes)


def test_access_matches_an_independent_reference_for_every_bit_combination():
    users = Users.parse(KFS)
    table = {n: {"enabled": users.lookup(n).enabled, "leader": users.lookup(n).leader,
                 "members": users.lookup(n).members} for n in users.names()}
    who = ["glenda", "tor", "upas", "mallory", "nobody", "adm", "none"]
    owners_groups = [("glenda", "dev"), ("tor", "glenda"), ("upas", "upas"), ("mallory", "adm"),
                     ("none", "none")]
    checked = 0
    for allowed in (set(), {"upas"}):
        users.allowed = set(allowed)
        for user, (owner, group), mode, want in itertools.product(
                who, owners_groups, range(0o1000), range(8)):
            got = users.access(user, owner, group, mode, want)
            assert got == reference_access(table, user, owner, group, mode, want, allowed), (
                f"access({user!r}, {owner!r}, {group!r}, {mode:#o}, {want}) allowed={allowed}")
            checked += 1
    assert checked == 2 * 7 * 5 * 512 * 8


def test_access_grants_by_any_single_class_and_enforces_read():
    t = Users.parse(KFS)
    assert not t.access("glenda", "tor", "tor", 0o770, AREAD)  # read is checked
    assert t.access("glenda", "tor", "dev", 0o040, AREAD)  # group grants
    assert not t.access("glenda", "tor", "dev", 0o060, AREAD | AEXEC)  # one class must grant all
    assert t.access("glenda", "glenda", "dev", 0o740, AREAD | AWRITE)  # owner grants all
    assert t.access("upas", "glenda", "dev", 0o005, AREAD | AEXEC)  # other applies to everyone
    assert t.access("glenda", "glenda", "dev", 0o000, 0)  # wanting nothing is always fine


def test_allowed_users_bypass_everything():
    t = Users.parse(KFS)
    t.allow("upas")
    assert t.access("upas", "glenda", "glenda", 0, AREAD | AWRITE | AEXEC)
    t.disallow("upas")
    assert not t.access("upas", "glenda", "glenda", 0, AREAD)
    t.allow("upas")
    t.allow("tor")
    t.disallow()
    assert t.allowed == set()
    with pytest.raises(UsersError, match="user not found"):
        t.disallow("nobody")


def test_defaults_are_the_owner_none_and_adm_led_by_the_owner():
    t = Users.defaults("glenda")
    assert t.format() == "0:none::\n!1:adm:glenda:glenda\n2:glenda:glenda:\n"
    assert t.ismember("glenda", "adm") and t.isleader("glenda", "adm")
    assert not t.ismember("none", "adm")
    assert not t.exists("write") and t.canwrite("none")
    assert Users.parse(t.format()).format() == t.format()
    t.check_owner("glenda")


@pytest.mark.parametrize("name", ["sys", "adm", "bin", "daemon", "glenda", "write", "none"])
def test_no_unix_account_gains_anything_by_its_name_in_the_defaults(name):
    """Whoever attaches with a name the built-in table does not give the server's owner: not
    enabled (so the tree makes it none), in no group, owner of nothing it can use."""
    t = Users.defaults("nemo")
    assert not t.enabled(name) or name == "none"
    assert not t.ismember(name, "adm") and not t.isleader(name, "adm")
    for group in ("adm", "sys", "bin", name):
        assert not t.access(name, name, group, 0o770, AREAD | AWRITE), group
    if name != "none":                  # none may be allowed, by someone at the console
        with pytest.raises(UsersError, match="user not found"):
            t.allow(name)


def test_defaults_when_the_owner_has_a_pseudo_users_name():
    assert Users.defaults("adm").format() == "0:none::\n1:adm:adm:\n"
    assert Users.defaults("sys").format() == "0:none::\n!1:adm:sys:sys\n2:sys:sys:\n"
    t = Users.defaults("none")
    assert t.format() == "0:none::\n!1:adm:none:none\n"
    for owner in ("adm", "sys", "none"):
        Users.defaults(owner).check_owner(owner)
    with pytest.raises(UsersError):
        Users.defaults("bad name")


@pytest.mark.parametrize("data, words", [
    (b"", "no users"),
    (b"# only comments\n\n", "no users"),
    (b"\x00" * 100, "want 4 ':'-separated fields"),
    (b"\xff\xfe garbage\n", "not UTF-8 text (byte 0)"),
    (b"1:glenda:glenda:\n", "no line for the server's owner 'nemo'"),
    (b"1:nemo:nemo:\n!2:glenda::\n", None),
    (b"!1:nemo:nemo:\n2:glenda::\n", "the server's owner 'nemo' is disabled"),
    (b"1:nemo:nemo:\n2:write::glenda\n3:glenda::\n", "'nemo' is not in the write group"),
    (b"1:nemo:nemo:\n2:write::\n", "'nemo' is not in the write group"),
    (b"1:nemo:nemo:\n2:write:nemo:\n", None),
    (b"1:nemo:nemo:\n2:write::glenda,nemo\n3:glenda::\n", None),
    (b"1:nemo:nemo:\n" + b"#" * MAXFILE, "larger than 1048576 bytes"),
])
def test_load_refuses_files_that_would_not_keep_the_owner_in_charge(data, words):
    if words is None:
        assert Users.load(data, "nemo").enabled("nemo")
        return
    with pytest.raises(UsersError) as e:
        Users.load(data, "nemo")
    assert words in str(e.value)


def test_none_only_ever_gets_the_other_bits():
    t = Users.parse("0:none:none:nemo\n1:nemo::\n")
    assert t.enabled("none") and t.ismember("none", "none")
    assert not t.access("none", "none", "none", 0o770, AREAD)
    assert t.access("none", "none", "none", 0o774, AREAD)
    assert t.access("nemo", "x", "none", 0o070, AREAD | AWRITE | AEXEC)


def test_console_users_listing_marks_disabled_users():
    t = Users.parse(KFS)
    lines = t.report_users()
    assert lines[0] == "-1:adm:adm:glenda"
    assert "!4:mallory::" in lines
    assert "3:dev:glenda:tor,bootes" in lines
    assert "\n".join(lines) + "\n" == t.format()


def test_console_uname_describes_a_user_by_name_or_uid():
    t = Users.parse(KFS)
    assert t.report_uname("glenda") == "uid 2 name glenda leader glenda members - groups adm,dev,write"
    assert t.report_uname("3") == "uid 3 name dev leader glenda members tor,bootes groups -"
    assert t.report_uname("mallory") == "uid 4 name mallory leader - members - groups - disabled"
    t.allow("tor")
    assert t.report_uname("tor").endswith(" groups dev,write allowed")
    with pytest.raises(UsersError, match="user not found"):
        t.report_uname("nobody")


def test_console_allow_listing_has_the_original_shape():
    t = Users.parse(KFS)
    assert t.report_allowed() == []
    assert t.report_allowed("tor") == ["user 'tor' is not allowed"]
    t.allow("tor")
    t.allow("glenda")
    assert t.report_allowed() == ["user 'glenda' is allowed", "user 'tor' is allowed"]
    t.disallow("tor")
    assert t.report_allowed("tor") == ["user 'glenda' is allowed", "user 'tor' is not allowed"]
