# The demonstration workload, run in the guest by scripts/run.
# Loads vcram.ko, which onlines the expander window as private node 1, puts a
# mixed-compressibility workload there with mbind(MPOL_BIND), and holds it
# while the host prints the device's stats; then frees it (DISCARD).
set -e
MIB=${VCRAM_DEMO_MIB:-256}
echo "== loading vcram.ko"
insmod /lib/modules/vcram/vcram.ko
echo "has_private_memory: $(cat /sys/devices/system/node/has_private_memory)"
numactl --hardware
echo "== vcram-workload: ${MIB} MiB on node 1 (mbind MPOL_BIND): zero pages, text, binaries, random"
vcram-workload --node 1 --mib "$MIB" --pattern mix:zero=1,text=1,binary=1,random=1 \
	--hold-seconds 20 --free munmap --reuse
echo "== after the free: what the driver sent the device"
for f in discards_sent discard_pages pages_zeroed_cpu pages_pending; do
	for d in /sys/bus/virtio/devices/virtio*/vcram; do
		[ -r "$d/$f" ] && echo "$f $(cat "$d/$f")"
	done
done
