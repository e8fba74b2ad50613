# The demonstration workload, run in the guest by scripts/run.
# (It grows with the driver: for now it shows the platform and the device.)
echo "== NUMA layout"
numactl --hardware
echo "== the vcram virtio device on the PCI bus (1af4:1046)"
found=0
for d in /sys/bus/pci/devices/*; do
	v=$(cat "$d/vendor") dev=$(cat "$d/device")
	if [ "$v" = 0x1af4 ] && [ "$dev" = 0x1046 ]; then
		echo "vcram device at ${d##*/}"
		found=1
	fi
done
echo "== platform checks"
vcram-platform-check || exit 1
[ "$found" = 1 ] || { echo "no vcram device found"; exit 1; }
if [ -e /lib/modules/vcram/vcram.ko ]; then
	insmod /lib/modules/vcram/vcram.ko
else
	echo "vcram.ko is not built yet: the window stays offline"
fi
