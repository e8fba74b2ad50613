# shellcheck shell=sh
# KTAP helpers for the in-guest shell suites (guest-driver/tests/*.sh,
# tests/guest/scripts/{private-node,mm-migration}.sh). POSIX sh: runs under
# the guest's busybox ash. scripts/build-initramfs installs it as
# /usr/share/vcram/ktap.sh; the suites come through fw_cfg, so they source it
# by that path and bail out when it is missing:
#
#   KTAP_LIB=/usr/share/vcram/ktap.sh
#   [ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing"; exit 1; }
#   . $KTAP_LIB
#   ktap_plan 3
#   check "node 1 is private" [ "$(cat /sys/devices/system/node/has_private_memory)" = 1 ]
#   wait_for 10 grep -q '^ready' /tmp/out
#   ...
#   ktap_done        # last command: the script's exit status
#
# State: ktap_n (cases so far), ktap_fails, ktap_planned. Names the helpers
# use internally start with _ktap_.

ktap_n=0
ktap_fails=0
ktap_planned=0

# ktap_plan N: the KTAP header and the plan line 1..N
ktap_plan() {
	ktap_planned=$1
	echo "KTAP version 1"
	echo "1..$ktap_planned"
}

# ok DESC / notok DESC: the next case passed / failed
ok() {
	ktap_n=$((ktap_n + 1))
	echo "ok $ktap_n $1"
}

notok() {
	ktap_n=$((ktap_n + 1))
	ktap_fails=$((ktap_fails + 1))
	echo "not ok $ktap_n $1"
}

# skip DESC REASON: the next case, skipped
skip() {
	ktap_n=$((ktap_n + 1))
	echo "ok $ktap_n $1 # SKIP $2"
}

# check DESC CMD [ARG...]: one case, ok if CMD (run in this shell) succeeds
check() {
	_ktap_desc=$1
	shift
	if "$@"; then ok "$_ktap_desc"; else notok "$_ktap_desc"; fi
}

# ktap_fail_rest DESC: every case still to come in the plan fails as DESC
# (for a suite that cannot run at all)
ktap_fail_rest() {
	while [ "$ktap_n" -lt "$ktap_planned" ]; do notok "$1"; done
}

# wait_for SECONDS CMD [ARG...]: run CMD once a second until it succeeds,
# for at most SECONDS seconds; status 0 if it succeeded, 1 on timeout
wait_for() {
	_ktap_left=$1
	shift
	until "$@"; do
		[ "$_ktap_left" -gt 0 ] || return 1
		sleep 1
		_ktap_left=$((_ktap_left - 1))
	done
}

# ktap_done: the "# totals" line; status 0 only if every planned case ran
# and none failed
ktap_done() {
	echo "# totals: pass:$((ktap_n - ktap_fails)) fail:$ktap_fails"
	[ "$ktap_fails" -eq 0 ] && [ "$ktap_n" -eq "$ktap_planned" ]
}
