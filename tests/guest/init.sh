#!/bin/busybox sh
# The test guest's /init (tests/kernel.py): set up, load the 9p modules, then source
# /run.sh, which mounts with mount9p and reports with check; then power off.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in netfs fscache 9pnet 9pnet_fd 9p virtio_ring virtio virtio_pci_modern_dev \
         virtio_pci_legacy_dev virtio_pci virtio_console; do
    insmod /lib/modules/$m.ko || echo "RESULT insmod-$m FAIL"
done
for i in 1 2 3 4 5 6 7 8 9 10; do
    ls /dev/vport* >/dev/null 2>&1 && break
    sleep 0.2
done

# mount9p PORT DIR OPTIONS: mount the 9P server on the virtio-serial port named PORT.  The
# port takes no writes from the kernel's 9P transport, so cat relays it through two FIFOs.
nfd=5
mount9p() {
    port=
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat $p/name)" = "$1" ] && port=/dev/$(basename $p)
    done
    [ -n "$port" ] || { echo "RESULT mount-$1 FAIL no port"; return 1; }
    mkfifo /tmp/$1.in /tmp/$1.out
    eval "exec $nfd<>$port"
    eval "cat <&$nfd >/tmp/$1.in &"
    eval "cat /tmp/$1.out >&$nfd &"
    nfd=$((nfd + 1))
    mkdir -p $2
    mount -t 9p -o trans=fd,rfdno=3,wfdno=4,$3 none $2 3<>/tmp/$1.in 4<>/tmp/$1.out
}

# check NAME COMMAND...: run it; RESULT NAME ok, or FAIL with the end of its output.
check() {
    name=$1
    shift
    if out=$("$@" 2>&1); then
        echo "RESULT $name ok"
    else
        echo "RESULT $name FAIL $(echo "$out" | tail -3 | tr '\n' '|')"
    fi
}

. /run.sh
echo "GUEST DONE"
sync
poweroff -f
