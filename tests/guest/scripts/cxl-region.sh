# cxl-region.sh: QEMU's CXL type-3 volatile memory (scripts/launch --cxl N)
# as an ordinary NUMA node, through sysfs alone (no `cxl` tool): a RAM region
# over every memdev (1 device: no interleave; 2: a 2-way interleave at the
# host bridge), committed, then dax/kmem adds it as System RAM on the node
# the ACPI CEDT window got (node 2 here), and its memory blocks are onlined.
#
# Guest shell (busybox sh). Include it in a guest script (scripts/bench-flow
# does) or run it alone: scripts/launch --cxl 2 --script this-file.
# Sets CXL_NODE, CXL_REGION, CXL_WAYS, CXL_BYTES and prints "cxl: ..." lines;
# exits 1 with "cxl: error: ..." when a step fails.
#
# The steps (Documentation/ABI/testing/sysfs-bus-cxl):
#  1. wait for cxl_pci/cxl_mem/cxl_port: memX and one endpointY per memdev
#  2. root decoder decoder0.N (the CFMWS window): read create_ram_region for
#     the next name, write it back -> regionZ
#  3. regionZ: interleave_granularity (the root's), interleave_ways (memdevs),
#     size (sum of the memdevs' ram/size)
#  4. per memdev i: its endpoint decoder decoderY.0: mode=ram, dpa_size =
#     size/ways; regionZ/target<i> = decoderY.0
#  5. regionZ/commit = 1 (programs the HDM decoders; in a VM this needs
#     CONFIG_CXL_REGION_INVALIDATION_TEST), bind to the cxl_region driver
#  6. the region's dax device (daxZ.0) binds to kmem (bound to device_dax:
#     unbind, then kmem/new_id); kmem adds its range offline (no default
#     onlining in this kernel): write "online" to the node's memory blocks

CXL_SYS=/sys/bus/cxl/devices
cxl_say() { echo "cxl: $*"; }
cxl_fail() {
	echo "cxl: error: $*"
	exit 1
}
cxl_write() { # VALUE FILE
	echo "$1" >"$2" 2>/dev/null || cxl_fail "writing '$1' to $2 failed"
}
cxl_wait() { # TENTHS DESCRIPTION COMMAND...: poll until COMMAND succeeds
	_n=$1 _what=$2
	shift 2
	while ! "$@"; do
		_n=$((_n - 1))
		[ "$_n" -gt 0 ] || cxl_fail "timed out waiting for $_what"
		sleep 0.1
	done
}

# 1. memdevs and their endpoint ports
cxl_first() { # the first of the paths that exists
	for _f in "$@"; do
		[ -e "$_f" ] && echo "$_f" && return 0
	done
	return 1
}
cxl_count() {
	_c=0
	for _f in "$CXL_SYS"/"$1"[0-9]*; do
		[ -e "$_f" ] && _c=$((_c + 1))
	done
	echo "$_c"
}
cxl_ready() { [ "$(cxl_count mem)" -gt 0 ] && [ "$(cxl_count endpoint)" -ge "$(cxl_count mem)" ]; }
cxl_wait 100 "CXL memdevs and endpoint ports (is the guest launched with --cxl?)" cxl_ready
CXL_WAYS=$(cxl_count mem)

# 2. the root decoder of the fixed memory window
cxl_root=
for d in "$CXL_SYS"/decoder0.*; do
	[ -e "$d/create_ram_region" ] && cxl_root=$d && break
done
[ -n "$cxl_root" ] || cxl_fail "no root decoder with create_ram_region"
CXL_REGION=$(cat "$cxl_root/create_ram_region")
cxl_write "$CXL_REGION" "$cxl_root/create_ram_region"
cxl_r=$CXL_SYS/$CXL_REGION
[ -d "$cxl_r" ] || cxl_fail "$CXL_REGION was not created"

# 3. geometry
cxl_write "$(cat "$cxl_root/interleave_granularity")" "$cxl_r/interleave_granularity"
cxl_write "$CXL_WAYS" "$cxl_r/interleave_ways"
CXL_BYTES=0
for m in "$CXL_SYS"/mem[0-9]*; do
	CXL_BYTES=$((CXL_BYTES + $(cat "$m/ram/size")))
done
[ "$CXL_BYTES" -gt 0 ] || cxl_fail "the memdevs have no volatile (ram) capacity"
cxl_write "$CXL_BYTES" "$cxl_r/size"

# 4. one endpoint decoder per memdev, in memdev order
i=0
for m in "$CXL_SYS"/mem[0-9]*; do
	mem=${m##*/}
	ed=
	for ep in "$CXL_SYS"/endpoint[0-9]*; do
		[ "$(basename "$(readlink "$ep/uport")")" = "$mem" ] || continue
		ed=$(cxl_first "$ep"/decoder*.0)
	done
	[ -n "$ed" ] || cxl_fail "no endpoint decoder for $mem"
	cxl_write ram "$ed/mode"
	cxl_write $((CXL_BYTES / CXL_WAYS)) "$ed/dpa_size"
	cxl_write "${ed##*/}" "$cxl_r/target$i"
	cxl_say "target$i=${ed##*/} ($mem)"
	i=$((i + 1))
done

# 5. commit and probe the region
cxl_write 1 "$cxl_r/commit"
[ -e "$cxl_r/driver" ] || cxl_write "$CXL_REGION" /sys/bus/cxl/drivers/cxl_region/bind

# 6. dax device -> kmem -> memory blocks online
cxl_dax() { # the region's dax device; only CXL regions make dax devices here
	cxl_first "$cxl_r"/dax_region*/dax*.* /sys/bus/dax/devices/dax*.*
}
cxl_has_dax() { [ -n "$(cxl_dax)" ]; }
cxl_wait 100 "the dax device of $CXL_REGION" cxl_has_dax
dax=$(basename "$(cxl_dax)")
drv=$(basename "$(readlink "/sys/bus/dax/devices/$dax/driver" 2>/dev/null)" 2>/dev/null)
if [ "$drv" != kmem ]; then
	[ -n "$drv" ] && cxl_write "$dax" "/sys/bus/dax/drivers/$drv/unbind"
	cxl_write "$dax" /sys/bus/dax/drivers/kmem/new_id
fi
cxl_kmem() { [ "$(basename "$(readlink "/sys/bus/dax/devices/$dax/driver")")" = kmem ]; }
cxl_wait 50 "kmem to take $dax" cxl_kmem
CXL_NODE=$(cat "/sys/bus/dax/devices/$dax/target_node")
[ "$CXL_NODE" -ge 0 ] 2>/dev/null || cxl_fail "$dax has no target node"
blocks=0
for b in /sys/devices/system/node/node"$CXL_NODE"/memory[0-9]*; do
	[ -e "$b/state" ] || continue
	[ "$(cat "$b/state")" = online ] || cxl_write online "$b/state"
	blocks=$((blocks + 1))
done
[ "$blocks" -gt 0 ] || cxl_fail "node $CXL_NODE has no memory blocks after kmem"
cxl_say "node=$CXL_NODE region=$CXL_REGION ways=$CXL_WAYS bytes=$CXL_BYTES dax=$dax blocks=$blocks resource=$(cat "$cxl_r/resource")"
