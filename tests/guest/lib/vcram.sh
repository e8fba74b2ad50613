# shellcheck shell=sh
# Shared preamble and helpers of vcram.ko's in-guest KTAP suites
# (guest-driver/tests/vcram-*.sh). POSIX sh (busybox ash). scripts/build-initramfs
# installs it as /usr/share/vcram/vcram.sh, beside ktap.sh, which it sources.
# The suites come through fw_cfg, so they source it by that path and bail out
# when it is missing:
#
#   VCRAM_LIB=/usr/share/vcram/vcram.sh
#   [ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
#   # shellcheck source=tests/guest/lib/vcram.sh
#   . $VCRAM_LIB
#
# Environment: VCRAM_KO (module, default /lib/modules/vcram/vcram.ko),
# VCRAM_NODE (the node the driver makes private, default 1).
# After vcram_bind or vcram_find: VDEV (/sys/bus/virtio/devices/virtioN, empty
# when no device is bound), VDIR ($VDEV/vcram), PCI (the PCI function) and DBG
# (the driver's debugfs directory).

_vcram_ktap=${VCRAM_KTAP_LIB:-/usr/share/vcram/ktap.sh}
[ -r "$_vcram_ktap" ] || { echo "KTAP version 1"; echo "Bail out! $_vcram_ktap missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. "$_vcram_ktap"

KO=${VCRAM_KO:-/lib/modules/vcram/vcram.ko}
NODE=${VCRAM_NODE:-1}

# private: the nodes with private memory (empty: none)
private() {
	cat /sys/devices/system/node/has_private_memory 2>/dev/null
}

# gone: no node has private memory any more
gone() {
	[ -z "$(private)" ]
}

# stat NAME: the driver's sysfs attribute NAME, -1 if it cannot be read
stat() {
	cat "$VDIR/$1" 2>/dev/null || echo -1
}

# vcram_find: set VDEV, VDIR, PCI and DBG from the device vcram is bound to
vcram_find() {
	VDEV=
	for _vcram_d in /sys/bus/virtio/drivers/vcram/virtio*; do
		[ -e "$_vcram_d" ] && VDEV=$_vcram_d
	done
	VDIR=$VDEV/vcram
	PCI=
	DBG=
	if [ -n "$VDEV" ]; then
		PCI=$(readlink -f "$VDEV/..")
		DBG=/sys/kernel/debug/vcram/$(basename "$VDEV")
	fi
}

# vcram_bind [PARAM=VALUE...]: load the module with these parameters, then
# vcram_find; the status is insmod's
vcram_bind() {
	insmod "$KO" "$@"
	_vcram_rc=$?
	vcram_find
	return $_vcram_rc
}

# below_low: the device's physical use is below its low watermark
below_low() {
	[ "$(stat physical_used)" -ge 0 ] &&
		[ $(($(stat physical_used) * 100)) -lt $(($(stat physical_capacity) * $(stat low_watermark))) ]
}

# unpaused: placement on the node is not paused
unpaused() {
	[ "$(stat paused)" = 0 ]
}

# le BYTES VALUE: VALUE as BYTES little-endian bytes, in printf octal escapes
le() {
	_vcram_i=0
	_vcram_v=$2
	while [ "$_vcram_i" -lt "$1" ]; do
		printf '\\%03o' $((_vcram_v & 255))
		_vcram_v=$((_vcram_v >> 8))
		_vcram_i=$((_vcram_i + 1))
	done
}

# ev TYPE LEVEL SEQ ADDR NPAGES [LOST]: a 48-byte event record (PROTOCOL.md
# section 5.1), for debugfs inject_event
ev() {
	# the format is the escapes le() built
	# shellcheck disable=SC2059
	printf "$(le 4 "$1")$(le 4 "$2")$(le 8 "$3")$(le 8 0)$(le 8 "$4")$(le 4 "$5")$(le 4 "${6:-0}")$(le 8 0)"
}

# vcram_remove_pci: remove $PCI through sysfs in the background and wait
# up to 15 s for the removal to return; status 0 if it did
vcram_remove_pci() {
	rm -f /tmp/removed
	_vcram_t0=$(date +%s)
	(echo 1 > "$PCI/remove"; echo done > /tmp/removed) &
	wait_for 15 test -e /tmp/removed
	echo "# removal took $(($(date +%s) - _vcram_t0)) s (limit 15)"
	test -e /tmp/removed
}

# vcram_orphan_checks HOLDER OUT: three cases after the device went away
# while HOLDER (a vcram-membind bound to the node, its output in OUT) held
# pages there: the orphaned node takes no new memory; the holder's data is
# intact; the memory goes once its last page is free (within 60 s: offlining
# 1 GiB took 16 s under the debug kernel with another guest beside it), and
# the module unloads
vcram_orphan_checks() {
	vcram-membind "$NODE" 4 0 zero >/tmp/new.out 2>&1
	_vcram_nrc=$?
	sed 's/^/# new: /' /tmp/new.out | tail -2
	check "the orphaned node takes no new memory" test "$_vcram_nrc" -ne 0
	wait "$1"
	_vcram_hrc=$?
	sed 's/^/# holder: /' "$2" | tail -3
	check "holder's data intact (checksums, status $_vcram_hrc)" \
		sh -c "test $_vcram_hrc -eq 0 && grep -q checksum_ok=1 '$2'"
	wait_for 60 gone
	rmmod vcram 2>/dev/null
	_vcram_mrc=$?
	check "memory removed once its last page is free, module unloads" \
		test "$_vcram_mrc" -eq 0 -a -z "$(private)"
}

# vcram_log [N]: the last N (default 12) vcram lines of the kernel log, as
# KTAP comments
vcram_log() {
	dmesg | grep -E "vcram|Killed process" | sed 's/^/# /' | tail -"${1:-12}"
}
