"""The Linux kernel's 9P client, in a QEMU guest, against the real server.

The host here cannot mount 9P, so the test boots Debian's kernel under QEMU (TCG, no network
device) with an initramfs made here: static busybox, the kernel's 9p modules, git with its
libraries, static fsx and locks (tests/guest/*.c, compiled here), a git repository to clone,
and a script.  Each 9P connection is a virtio-serial port whose host end QEMU connects to the
server's Unix socket; in the guest a busybox relay (cat through two FIFOs: the port accepts no
kernel writes, a FIFO does) carries it to `mount -t 9p -o trans=fd`.  The script prints
`RESULT name ok` or `RESULT name FAIL why` lines on the serial console, which `boot` returns.

tests/guest/get-kernel.sh fetches QEMU, busybox and the kernel (.ci/run calls it); `missing()`
says what is absent.
"""

import glob
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST = os.path.join(HERE, "guest")
KERNEL_DIR = os.environ.get("CREEPY_TEST_KERNEL",
                            os.path.join(os.path.expanduser("~"), ".cache", "creepy-test-kernel"))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "creepy-test-guest")
MODULES = ["fs/netfs/netfs.ko", "fs/fscache/fscache.ko", "net/9p/9pnet.ko",
           "net/9p/9pnet_fd.ko", "fs/9p/9p.ko", "drivers/virtio/virtio_ring.ko",
           "drivers/virtio/virtio.ko", "drivers/virtio/virtio_pci_modern_dev.ko",
           "drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci.ko",
           "drivers/char/virtio_console.ko"]


def kernel():
    """(vmlinuz path, modules directory) of the unpacked Debian kernel, or None."""
    images = sorted(glob.glob(os.path.join(KERNEL_DIR, "boot", "vmlinuz-*")))
    if not images:
        return None
    version = os.path.basename(images[-1])[len("vmlinuz-"):]
    mods = os.path.join(KERNEL_DIR, "lib", "modules", version, "kernel")
    return (images[-1], mods) if os.path.isdir(mods) else None


def missing():
    """What the kernel test needs and this machine lacks, or '' when nothing is."""
    lacks = []
    if shutil.which("qemu-system-x86_64") is None:
        lacks.append("qemu-system-x86_64")
    if not os.path.exists("/bin/busybox"):
        lacks.append("/bin/busybox (busybox-static)")
    if kernel() is None:
        lacks.append(f"a kernel in {KERNEL_DIR}")
    if shutil.which("gcc") is None:
        lacks.append("gcc")
    if shutil.which("git") is None:
        lacks.append("git")
    if lacks:
        return ", ".join(lacks) + ": run tests/guest/get-kernel.sh"
    return ""


# --- the initramfs ---------------------------------------------------------------------------

class Cpio:
    """A newc cpio archive, as the kernel unpacks an initramfs."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b""):
        name_b = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
        self.ino += 1
        rec = b"070701" + b"".join(b"%08X" % v for v in fields) + name_b
        rec += b"\0" * (-len(rec) % 4)
        self.out += rec + data + b"\0" * (-len(data) % 4)

    def mkdir(self, path):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, 0o40755)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path, target):
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, 0o120777, target.encode())

    def tree(self, src, dst):
        for root, dirs, files in os.walk(src):
            rel = os.path.relpath(root, src)
            base = dst if rel == "." else f"{dst}/{rel}"
            self.mkdir(base)
            for f in files:
                p = os.path.join(root, f)
                with open(p, "rb") as fp:
                    self.file(f"{base}/{f}", fp.read(), os.stat(p).st_mode & 0o777)

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return gzip.compress(bytes(self.out), compresslevel=1)


def _libs(binary):
    """The shared libraries a dynamic binary loads (ldd), its loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/") and os.path.exists(p):
                libs.append(p)
    return libs


def guest_binary(name):
    """tests/guest/<name>.c compiled statically, cached by the source's hash."""
    src = os.path.join(GUEST, f"{name}.c")
    with open(src, "rb") as fp:
        digest = hashlib.sha256(fp.read()).hexdigest()[:16]
    out = os.path.join(CACHE, f"{name}-{digest}")
    if not os.path.exists(out):
        os.makedirs(CACHE, exist_ok=True)
        tmp = out + ".tmp"
        subprocess.run(["gcc", "-static", "-O2", "-o", tmp, src], check=True,
                       capture_output=True)
        os.replace(tmp, out)
    return out


def initramfs(script, repo, passwd):
    """The guest's initramfs: /init (tests/guest/init.sh, which sources `script`), busybox,
    the 9p modules, fsx, locks, git, the bare repository `repo` at /src/repo.git, and
    /etc/passwd."""
    _, mods = kernel()
    c = Cpio()
    for d in ("proc", "sys", "dev", "tmp", "mnt", "root"):
        c.mkdir(d)
    with open("/bin/busybox", "rb") as fp:
        c.file("bin/busybox", fp.read(), 0o755)
    for m in MODULES:
        with open(os.path.join(mods, m), "rb") as fp:
            c.file("lib/modules/" + os.path.basename(m), fp.read())
    for tool in ("fsx", "locks"):
        with open(guest_binary(tool), "rb") as fp:
            c.file(f"bin/{tool}", fp.read(), 0o755)
    git = shutil.which("git")
    with open(git, "rb") as fp:
        c.file("usr/bin/git", fp.read(), 0o755)
    for lib in _libs(git):
        with open(lib, "rb") as fp:
            c.file(lib, fp.read(), 0o755)
    for helper in ("git-upload-pack", "git-receive-pack"):
        c.symlink(f"usr/lib/git-core/{helper}", "/usr/bin/git")
    c.tree(repo, "src/repo.git")
    c.file("etc/passwd", passwd.encode())
    c.file("etc/group", b"root:x:0:\nglenda:x:1000:\n")
    with open(os.path.join(GUEST, "init.sh"), "rb") as fp:
        c.file("init", fp.read(), 0o755)
    c.file("run.sh", script.encode(), 0o755)
    return c.finish()


def boot(initrd, sockets, timeout=600):
    """Boot the guest with one virtio-serial port per (name, Unix socket path) in sockets;
    its console output.  The guest powers itself off when its script ends."""
    vmlinuz, _ = kernel()
    with tempfile.TemporaryDirectory(prefix="creepy-guest-") as tmp:
        path = os.path.join(tmp, "initrd.gz")
        with open(path, "wb") as fp:
            fp.write(initrd)
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "1",
                "-nographic", "-no-reboot", "-nic", "none", "-kernel", vmlinuz,
                "-initrd", path, "-append", "console=ttyS0 quiet panic=-1",
                "-device", "virtio-serial-pci"]
        for i, (name, sock) in enumerate(sockets):
            argv += ["-chardev", f"socket,id=c{i},path={sock}",
                     "-device", f"virtserialport,chardev=c{i},name={name}"]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
    return r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")


def results(output):
    """{name: 'ok' or the failure} of the RESULT lines in the guest's output."""
    out = {}
    for line in output.splitlines():
        line = line.strip()
        i = line.find("RESULT ")
        if i < 0:
            continue
        parts = line[i + 7:].split(" ", 2)
        if len(parts) >= 2:
            out[parts[0]] = "ok" if parts[1] == "ok" else " ".join(parts[1:])
    return out
