"""The Linux kernel's 9P client against the real server, in both dialects (tests/kernel.py).

One boot of Debian's kernel under QEMU mounts creepy twice, with `version=9p2000.L` and with
`version=9p2000` (both cache=loose, the mode in which git used to fail), and runs on each:
an fsx-style exerciser (tests/guest/fsx.c; mmap included), a git clone plus `git fsck
--full --strict`, renames across directories, unlink of an open file, statfs, fsync, a
2,000-entry directory, and rmdir of a full directory (whose error Linux must map); on the
9P2000.L mount also statfs, symlinks, POSIX record locks between two processes, on one mount
and across two (Tlock, Tgetlock; tests/guest/locks.c), and numeric owners (root and uid 1000 map to users of
/root/users), and hard links and device files refused with EPERM.  (Over 9P2000 Linux has no
statfs, symlinks or server locks.)  /stats then shows which 9P2000.L requests the kernel sent.  CI installs QEMU, busybox and the kernel (tests/guest/get-kernel.sh);
elsewhere the test is skipped when they are missing, and fails in CI.

Run it: `pytest tests/test_kernel.py` (about a minute; -s shows the guest's console).
"""

import os
import random
import subprocess

import pytest

import kernel
from creepy.ninep.client import SyncClient
from servers import Server9pix, root_is_owner

COMMITS = 6

RUN = r"""
mount9p L /mnt/l "version=9p2000.L,cache=loose,msize=262144" || echo "RESULT mount-L FAIL"
mount9p L2 /mnt/l2 "version=9p2000.L,cache=none,msize=262144" || echo "RESULT mount-L2 FAIL"
mount9p U /mnt/u "version=9p2000,cache=loose,msize=262144,access=any,uname=@OWNER@,dfltuid=0,dfltgid=0" \
    || echo "RESULT mount-U FAIL"

t_fsx() { fsx -m -n 1500 -s 3 $1/fsx.dat; }
t_git() {
    git clone -q file:///src/repo.git $1/clone &&
    git -C $1/clone fsck --full --strict &&
    [ "$(git -C $1/clone rev-list --count HEAD)" = @COMMITS@ ] &&
    [ -z "$(git -C $1/clone status --porcelain)" ]
}
t_rename() {
    mkdir $1/a $1/b $1/a/d && echo moved > $1/a/f && echo deep > $1/a/d/x &&
    mv $1/a/f $1/b/g && mv $1/a/d $1/b/d &&
    [ "$(cat $1/b/g)" = moved ] && [ "$(cat $1/b/d/x)" = deep ] && [ ! -e $1/a/f ] &&
    echo other > $1/b/h && mv $1/b/h $1/b/g && [ "$(cat $1/b/g)" = other ]
}
t_unlink_open() {
    ( exec 7<>$1/o; echo hello >&7; rm $1/o; echo more >&7; [ ! -e $1/o ] &&
      [ "$(cat /proc/self/fd/7)" = "$(printf 'hello\nmore')" ] )
}
t_statfs() {
    set -- $(stat -f -c '%b %f %a %S' $1)
    [ "$1" -gt 0 ] && [ "$2" -gt 0 ] && [ "$3" -le "$2" ] && [ "$4" = 16384 ]
}
t_fsync() { dd if=/dev/zero of=$1/synced bs=65536 count=4 conv=fsync 2>&1 && sync; }
t_many() {
    mkdir $1/many || return 1
    i=0
    while [ $i -lt 2000 ]; do : > $1/many/f$i || return 1; i=$((i + 1)); done
    n=$(ls $1/many | wc -l)
    [ "$n" = 2000 ] || { echo "ls saw $n entries"; return 1; }
    [ "$(ls $1/many | sort -u | wc -l)" = 2000 ] || { echo "ls saw duplicates"; return 1; }
    rm -r $1/many && [ ! -e $1/many ]
}
t_rmdir_full() {
    mkdir $1/full && : > $1/full/x || return 1
    msg=$(rmdir $1/full 2>&1) && return 1
    case "$msg" in *"Directory not empty"*) ;; *) echo "$msg"; return 1;; esac
}
t_symlink() {
    echo pointed > $1/tgt && ln -s tgt $1/ln && [ -L $1/ln ] &&
    [ "$(readlink $1/ln)" = tgt ] && [ "$(cat $1/ln)" = pointed ]
}
t_locks() { locks $1/lk && locks $1/lk2 /mnt/l2/tL/lk2; }
t_refused() {
    : > $1/one
    msg=$(ln $1/one $1/two 2>&1) && return 1
    case "$msg" in *"Operation not permitted"*) ;; *) echo "$msg"; return 1;; esac
    msg=$(mkfifo $1/fifo 2>&1) && return 1
    case "$msg" in *"Operation not permitted"*) ;; *) echo "$msg"; return 1;; esac
}
t_owners() {
    touch $1/own && [ "$(stat -c %u $1/own)" = 0 ] || { stat $1/own; return 1; }
    mkdir $1/g && chmod 777 $1/g && ls -ld $1/g || return 1
    su -s /bin/sh glenda -c "id; touch $1/g/f" && [ "$(stat -c %u $1/g/f)" = 1000 ]
}

for D in L U; do
    case $D in L) M=/mnt/l;; U) M=/mnt/u;; esac
    mkdir -p $M/t$D || continue
    W=$M/t$D
    for t in fsx git rename unlink_open fsync many rmdir_full; do
        check $D-$t t_$t $W
    done
    if [ $D = L ]; then
        for t in statfs symlink locks refused owners; do check $D-$t t_$t $W; done
    fi
done
umount /mnt/l
umount /mnt/l2
umount /mnt/u
"""

L_ONLY = ("statfs", "symlink", "locks", "refused", "owners")
# What the kernel sent over 9P2000.L, by /stats: every message creepy answers but Trename
# (Linux uses Trenameat), Txattrcreate (nothing set an attribute) and Tflush.
L_SENT = ("Tlopen", "Tlcreate", "Tgetattr", "Tsetattr", "Treaddir", "Trenameat", "Tunlinkat",
          "Tsymlink", "Treadlink", "Tmkdir", "Tstatfs", "Tfsync", "Tlock", "Tgetlock",
          "Txattrwalk", "Tlink", "Tmknod", "Twalk", "Tread", "Twrite", "Tclunk", "Tattach")
BOTH = ("fsx", "git", "rename", "unlink_open", "fsync", "many", "rmdir_full")


def make_repo(path):
    """A bare git repository of COMMITS commits of a few dozen files, some large."""
    work = os.path.join(os.path.dirname(path), "repo-work")
    rng = random.Random(9)
    env = dict(os.environ, GIT_AUTHOR_NAME="glenda", GIT_AUTHOR_EMAIL="glenda@example.org",
               GIT_COMMITTER_NAME="glenda", GIT_COMMITTER_EMAIL="glenda@example.org")

    def git(*args, cwd=work):
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    os.makedirs(work)
    git("init", "-q", "-b", "main")
    for c in range(COMMITS):
        for i in range(rng.randrange(5, 15)):
            d = os.path.join(work, f"dir{rng.randrange(4)}")
            os.makedirs(d, exist_ok=True)
            size = rng.choice([100, 3000, 20000, 300000])
            with open(os.path.join(d, f"f{rng.randrange(40)}"), "wb") as fp:
                fp.write(rng.randbytes(size))
        git("add", "-A")
        git("commit", "-q", "-m", f"commit {c}")
    git("clone", "-q", "--bare", work, path, cwd=os.path.dirname(path))


def test_linux_mounts_creepy_in_both_dialects(tmp_path):
    why = kernel.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the kernel test: missing {why}")
        pytest.skip(f"missing {why}")
    srv = Server9pix(tmp_path)
    srv.start()
    try:
        # Linux's root (uid 0) is the server's owner; uid 1000 is glenda.
        owner = root_is_owner(srv, "1000:glenda:glenda:\n")
        os.mkdir(tmp_path / "git")
        repo = str(tmp_path / "git" / "repo.git")
        make_repo(repo)
        script = RUN.replace("@OWNER@", owner).replace("@COMMITS@", str(COMMITS))
        initrd = kernel.initramfs(script, repo, "root:x:0:0::/root:/bin/sh\n"
                                                "glenda:x:1000:1000::/tmp:/bin/sh\n")
        out = kernel.boot(initrd, [("L", srv.unix), ("U", srv.unix), ("L2", srv.unix)])
        got = kernel.results(out)
        want = [f"L-{t}" for t in BOTH + L_ONLY] + [f"U-{t}" for t in BOTH]
        bad = {k: v for k, v in got.items() if v != "ok"}
        tail = "\n".join(out.splitlines()[-40:])
        assert not bad, f"failed in the guest: {bad}\n--- console:\n{tail}"
        assert sorted(got) == sorted(want), f"missing: {set(want) - set(got)}\n{tail}"
        assert "GUEST DONE" in out, tail
        with SyncClient(srv.unix_dial, aname="main") as m:
            stats = m.read_file("stats").decode()
        sent = {ln.split()[0]: int(ln.split()[1]) for ln in stats.splitlines()
                if ln[:1] == "T" and " calls" in ln}
        assert [t for t in L_SENT if not sent.get(t)] == [], stats
        srv.check_alive()
        assert "Traceback" not in srv.stderr, srv.stderr
    finally:
        srv.close()
