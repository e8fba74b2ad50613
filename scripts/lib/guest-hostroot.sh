# Guest side of `scripts/run -- COMMAND` (busybox sh in the initramfs). scripts/run prepends
# the settings (VCRAM_CMD: the command line, shell-quoted; VCRAM_CWD; VCRAM_DRIVER 0|1;
# VCRAM_CAPS: vcram.ko's caps, empty for its default) and
# hands the whole file to the guest as its script (fw_cfg opt/vcram/script).
#
# Loads vcram.ko (node 1 becomes the private node), mounts the host's root read-only over
# virtio-9p (mount tag "hostroot", scripts/launch --share-root) with a tmpfs overlay for
# writes, and runs the command chrooted there. Output contract with scripts/run:
#   "vcram-run: error: ..."   a setup step failed (the status says which)
#   "vcram-run: begin"        the command's output follows, up to init's "vcram-exit: N"
# Statuses of its own: 120 vcram.ko did not load, 121 the host root could not be mounted,
# 127 the command is not found in the guest.
fail() {
    status=$1
    shift
    echo "vcram-run: error: $*"
    exit "$status"
}

# Kernel messages stay in the boot log, off the command's output.
echo 1 >/proc/sys/kernel/printk

if [ "$VCRAM_DRIVER" = 1 ]; then
    insmod /lib/modules/vcram/vcram.ko ${VCRAM_CAPS:+caps=$VCRAM_CAPS} ||
        fail 120 "insmod vcram.ko failed (see the boot log)"
    grep -q 1 /sys/devices/system/node/has_private_memory 2>/dev/null ||
        fail 120 "vcram.ko loaded but node 1 is not a private node"
fi

mkdir -p /mnt/host /mnt/rw /mnt/root
grep -qw 9p /proc/filesystems || fail 121 "the guest kernel has no 9p file system (rebuild it: scripts/setup)"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /mnt/host ||
    fail 121 "cannot mount the host root (virtio-9p tag 'hostroot'); see the boot log"
mount -t tmpfs -o mode=755 tmpfs /mnt/rw || fail 121 "cannot mount the tmpfs for the overlay"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work /mnt/root ||
    fail 121 "cannot mount the overlay (host root read-only + tmpfs) on /mnt/root"
for f in /bin/sh /usr/bin/env; do
    [ -x "/mnt/root$f" ] || fail 121 "the shared host root has no $f: not a root file system"
done
for d in proc sys dev tmp run; do
    mkdir -p "/mnt/root/$d" 2>/dev/null
done
mount -t proc proc /mnt/root/proc
mount -t sysfs sysfs /mnt/root/sys
mount -t devtmpfs devtmpfs /mnt/root/dev
mkdir -p /mnt/root/dev/pts /mnt/root/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /mnt/root/dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /mnt/root/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /mnt/root/tmp
mount -t tmpfs -o mode=755 tmpfs /mnt/root/run
mount -t cgroup2 cgroup2 /mnt/root/sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /mnt/root/sys/kernel/debug 2>/dev/null

# Leading newline: the marker must start a line.
printf '\nvcram-run: begin\n'
# shellcheck disable=SC2016 # expanded by the guest's sh, not here
chroot /mnt/root /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb LANG=C.UTF-8 VCRAM_CWD="$VCRAM_CWD" VCRAM_CMD="$VCRAM_CMD" /bin/sh -c '
    cd "$VCRAM_CWD" 2>/dev/null || cd /
    eval "set -- $VCRAM_CMD"
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "vcram-run: error: command not found in the guest: $1"
        exit 127
    fi
    exec "$@" </dev/null' </dev/null
