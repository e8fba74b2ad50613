# shellcheck shell=bash disable=SC2034
# Common helpers for the vcram setup scripts. Source it; do not run it.
#
# Provides: paths (VCRAM_ROOT, VCRAM_CACHE, VCRAM_OUT), logging (vc_log,
# vc_warn, vc_die, vc_step), timing, free-space checks, atomic publishing of
# the artifacts in images/out/ and of images/out/platform.env.

VCRAM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VCRAM_CACHE=${VCRAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vcram}
VCRAM_OUT=$VCRAM_ROOT/images/out
VCRAM_QUIET=${VCRAM_QUIET:-0}
VCRAM_PROG=${VCRAM_PROG:-$(basename "$0")}
export VCRAM_CACHE

# Minimum QEMU version (major.minor) and the device we need from it.
VCRAM_QEMU_MIN=10.2
VCRAM_QEMU_DEVICE=vhost-user-test-device-pci

vc_log() {
    [[ $VCRAM_QUIET == 1 ]] && return 0
    printf '%s\n' "$*" >&2
}

# Always shown, even with --quiet.
vc_say() {
    printf '%s\n' "$*" >&2
}

vc_warn() {
    printf '%s: warning: %s\n' "$VCRAM_PROG" "$*" >&2
}

vc_die() {
    printf '%s: error: %s\n' "$VCRAM_PROG" "$*" >&2
    exit 1
}

vc_now() {
    date +%s.%N
}

# vc_elapsed START -> "12.3s"
vc_elapsed() {
    local start=$1 end
    end=$(vc_now)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1fs", e - s }'
}

# vc_need_cmd CMD [HINT]
vc_need_cmd() {
    command -v "$1" >/dev/null 2>&1 || vc_die "'$1' not found${2:+ ($2)}; run scripts/setup"
}

# vc_check_space DIR MIB WHAT: fail unless DIR's filesystem has MIB MiB free.
vc_check_space() {
    local dir=$1 need_mib=$2 what=$3 avail_kib avail_mib
    mkdir -p "$dir"
    avail_kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    avail_mib=$((avail_kib / 1024))
    if ((avail_mib < need_mib)); then
        vc_die "not enough free space for $what in $dir: need ${need_mib} MiB, have ${avail_mib} MiB (free some space or set VCRAM_CACHE to another disk)"
    fi
}

# vc_sha256 FILE... -> hex digest over the files' names and contents.
vc_sha256_files() {
    local f
    for f in "$@"; do
        printf '%s\n' "${f##*/}"
        cat "$f"
    done | sha256sum | cut -c1-64
}

# vc_atomic_symlink TARGET LINK: replace LINK with a symlink to TARGET atomically.
vc_atomic_symlink() {
    local target=$1 link=$2 tmp
    tmp="$link.tmp.$$"
    ln -sfn "$target" "$tmp"
    mv -Tf "$tmp" "$link"
}

# vc_lock NAME: take an exclusive lock in the cache for the rest of the
# process (another setup or build on the same cache waits). The descriptors
# are listed in VCRAM_LOCK_FDS so that background helpers can close them.
VCRAM_LOCK_FDS=""
vc_lock() {
    local name=$1 fd
    mkdir -p "$VCRAM_CACHE"
    exec {fd}>"$VCRAM_CACHE/.$name.lock"
    VCRAM_LOCK_FDS+=" $fd"
    if ! flock -n "$fd"; then
        vc_log "  waiting for another '$name' run on $VCRAM_CACHE to finish ..."
        flock "$fd"
    fi
}

# vc_remove_async DIR: rename DIR out of the way (instantly) and delete it in
# the background, without holding our locks.
vc_remove_async() {
    local dir=$1 trash fd
    [[ -e $dir ]] || return 0
    trash=$(dirname "$dir")/.trash.$(basename "$dir").$$.$RANDOM
    if mv -T "$dir" "$trash" 2>/dev/null; then
        (
            for fd in $VCRAM_LOCK_FDS; do
                eval "exec $fd>&-"
            done
            exec rm -rf "$trash"
        ) </dev/null >/dev/null 2>&1 &
    else
        rm -rf "$dir"
    fi
}

# Read KEY=VALUE from a shell-sourceable file without sourcing it.
vc_env_get() {
    local file=$1 key=$2
    [[ -f $file ]] || return 1
    (
        # shellcheck disable=SC1090
        . "$file"
        printf '%s' "${!key-}"
    )
}

# Rewrite images/out/platform.env from what is currently published in
# images/out/ and the selected QEMU. Called by every script that publishes.
vc_publish_platform_env() {
    local env=$VCRAM_OUT/platform.env tmp kernel_version="" kbuild="" qemu_version=""
    mkdir -p "$VCRAM_OUT"
    if [[ -e $VCRAM_OUT/kernel-build ]]; then
        kbuild=$(readlink -f "$VCRAM_OUT/kernel-build")
        kernel_version=$(cat "$kbuild/include/config/kernel.release" 2>/dev/null || true)
    fi
    if [[ -f $VCRAM_CACHE/qemu/selected.env ]]; then
        qemu_version=$(vc_env_get "$VCRAM_CACHE/qemu/selected.env" QEMU_VERSION || true)
    fi
    tmp="$env.tmp.$$"
    {
        echo "# Written by vcram scripts/setup (scripts/lib/common.sh); do not edit."
        printf 'KERNEL=%q\n' "$VCRAM_OUT/bzImage"
        printf 'INITRD=%q\n' "$VCRAM_OUT/initramfs.cpio.gz"
        printf 'KBUILD=%q\n' "$kbuild"
        printf 'KERNEL_VERSION=%q\n' "$kernel_version"
        printf 'QEMU=%q\n' "$VCRAM_ROOT/scripts/qemu"
        printf 'QEMU_VERSION=%q\n' "$qemu_version"
        printf 'VCRAM_CACHE=%q\n' "$VCRAM_CACHE"
    } >"$tmp"
    mv -f "$tmp" "$env"
}
