# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2153
# QEMU selection and the local QEMU prefix. Needs common.sh and apt.sh.
#
# The selection lives in $VCRAM_CACHE/qemu/selected.env (written only after
# the chosen QEMU was probed successfully) and is what scripts/qemu runs:
#   QEMU_KIND=system|prefix  QEMU_BIN  QEMU_LOADER  QEMU_LIBPATH  QEMU_DATADIR
#   QEMU_MODDIR  QEMU_VERSION (x.y.z)  QEMU_PKG_VERSION (Debian version)

VCRAM_QEMU_DIR=$VCRAM_CACHE/qemu
VCRAM_QEMU_PKG=qemu-system-x86
VCRAM_QEMU_SUITE=${VCRAM_QEMU_SUITE:-trixie-backports}

# vc_version_ge A B: true when version A >= B (numeric dotted).
vc_version_ge() {
    [[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" == "$2" ]]
}

# vc_qemu_cmd KIND BIN LOADER LIBPATH DATADIRS: print the command prefix
# (one word per line) that runs this QEMU.
vc_qemu_cmd() {
    local kind=$1 bin=$2 loader=$3 libpath=$4 datadir=$5
    if [[ $kind == prefix ]]; then
        printf '%s\n' "$loader" --library-path "$libpath" --argv0 qemu-system-x86_64 "$bin"
        local d
        local -a dirs
        IFS=: read -ra dirs <<<"$datadir"
        for d in "${dirs[@]}"; do
            printf '%s\n' -L "$d"
        done
    else
        printf '%s\n' "$bin"
    fi
}

# vc_qemu_probe KIND BIN LOADER LIBPATH DATADIR MODDIR: print "x.y.z" when
# this QEMU runs; return 2 when it lacks the device, 1 when it does not run.
vc_qemu_probe() {
    local kind=$1 bin=$2 loader=$3 libpath=$4 datadir=$5 moddir=$6 out ver
    local -a cmd
    mapfile -t cmd < <(vc_qemu_cmd "$kind" "$bin" "$loader" "$libpath" "$datadir")
    if [[ $kind == prefix ]]; then
        out=$(QEMU_MODULE_DIR=$moddir "${cmd[@]}" -version 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
    else
        out=$("${cmd[@]}" -version 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
    fi
    ver=$(sed -n 's/^QEMU emulator version \([0-9][0-9.]*\).*/\1/p' <<<"$out" | head -n1)
    [[ -n $ver ]] || return 1
    printf '%s\n' "$ver"
    # Probe the one device; never "-device help" (it loads every module it
    # finds, including a system QEMU's, and can abort).
    if [[ $kind == prefix ]]; then
        QEMU_MODULE_DIR=$moddir "${cmd[@]}" -machine none -device "$VCRAM_QEMU_DEVICE,help" >/dev/null 2>&1 || return 2
    else
        "${cmd[@]}" -machine none -device "$VCRAM_QEMU_DEVICE,help" >/dev/null 2>&1 || return 2
    fi
}

# Write selected.env atomically.
vc_qemu_select() {
    local kind=$1 bin=$2 loader=$3 libpath=$4 datadir=$5 moddir=$6 ver=$7 pkgver=$8 tmp
    mkdir -p "$VCRAM_QEMU_DIR"
    tmp=$VCRAM_QEMU_DIR/selected.env.tmp.$$
    {
        printf 'QEMU_KIND=%q\n' "$kind"
        printf 'QEMU_BIN=%q\n' "$bin"
        printf 'QEMU_LOADER=%q\n' "$loader"
        printf 'QEMU_LIBPATH=%q\n' "$libpath"
        printf 'QEMU_DATADIR=%q\n' "$datadir"
        printf 'QEMU_MODDIR=%q\n' "$moddir"
        printf 'QEMU_VERSION=%q\n' "$ver"
        printf 'QEMU_PKG_VERSION=%q\n' "$pkgver"
    } >"$tmp"
    mv -f "$tmp" "$VCRAM_QEMU_DIR/selected.env"
}

# Fill QP_* variables describing the prefix at DIR (loader, libs, data, modules).
vc_qemu_prefix_layout() {
    local p=$1 d
    QP_BIN=$p/usr/bin/qemu-system-x86_64
    QP_LOADER=""
    for d in "$p/usr/lib64" "$p/lib64" "$p/usr/lib/x86_64-linux-gnu" "$p/lib/x86_64-linux-gnu"; do
        if [[ -e $d/ld-linux-x86-64.so.2 ]]; then
            QP_LOADER=$d/ld-linux-x86-64.so.2
            break
        fi
    done
    QP_LIBPATH=""
    for d in "$p/usr/lib/x86_64-linux-gnu" "$p/lib/x86_64-linux-gnu" "$p/usr/lib64" "$p/lib64" "$p/usr/lib"; do
        [[ -d $d ]] && QP_LIBPATH+="${QP_LIBPATH:+:}$d"
    done
    # Debian's QEMU looks for firmware in /usr/share/qemu and /usr/share/seabios
    # (and ipxe ROMs through symlinks): one -L per directory.
    QP_DATADIR=""
    for d in "$p/usr/share/qemu" "$p/usr/share/seabios" "$p/usr/lib/ipxe/qemu"; do
        [[ -d $d ]] && QP_DATADIR+="${QP_DATADIR:+:}$d"
    done
    QP_MODDIR=$p/usr/lib/x86_64-linux-gnu/qemu
}

# Turn absolute symlinks inside prefix P into relative ones that resolve
# inside P (e.g. usr/share/qemu/bios-256k.bin -> ../seabios/bios-256k.bin).
vc_fix_symlinks() {
    local p=$1 link target dir
    while IFS= read -r -d '' link; do
        target=$(readlink "$link")
        [[ $target == /* ]] || continue
        dir=$(dirname "$link")
        ln -sfn "$(realpath -ms --relative-to="$dir" "$p$target")" "$link"
    done < <(find "$p" -type l -print0)
}

# Try the system QEMU; on success select it and return 0.
vc_qemu_try_system() {
    local bin ver rc=0
    bin=$(command -v qemu-system-x86_64 2>/dev/null) || return 1
    ver=$(vc_qemu_probe system "$bin" "" "" "" "") || rc=$?
    ver=${ver%%$'\n'*}
    if [[ $rc == 0 ]] && vc_version_ge "$ver" "$VCRAM_QEMU_MIN"; then
        vc_qemu_select system "$bin" "" "" "" "" "$ver" "$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)"
        vc_log "  using the system QEMU $ver ($bin)"
        return 0
    fi
    if [[ -n $ver ]]; then
        vc_log "  system QEMU $bin is $ver$([[ $rc == 2 ]] && echo ' without '"$VCRAM_QEMU_DEVICE"); need >= $VCRAM_QEMU_MIN with $VCRAM_QEMU_DEVICE"
    fi
    return 1
}

# Install (if needed) and select Debian's $VCRAM_QEMU_SUITE qemu-system-x86 in
# a prefix under $VCRAM_QEMU_DIR/<version>/.
vc_qemu_install_prefix() {
    local pkgver key prefix tmp dl deb ver rc=0 log
    # Fast path: an already complete prefix for the selected version.
    vc_apt_prepare 0
    pkgver=$(vc_apt_cache policy -t "$VCRAM_QEMU_SUITE" "$VCRAM_QEMU_PKG" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    if [[ -z $pkgver || $pkgver == "(none)" ]]; then
        vc_apt_prepare 1
        pkgver=$(vc_apt_cache policy -t "$VCRAM_QEMU_SUITE" "$VCRAM_QEMU_PKG" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    fi
    [[ -n $pkgver && $pkgver != "(none)" ]] || vc_die "no $VCRAM_QEMU_PKG package in $VCRAM_QEMU_SUITE (mirror $(vc_apt_mirror))"
    ver=${pkgver#*:}
    ver=${ver%%[+~-]*}
    vc_version_ge "$ver" "$VCRAM_QEMU_MIN" || vc_die "$VCRAM_QEMU_SUITE has $VCRAM_QEMU_PKG $pkgver, need >= $VCRAM_QEMU_MIN; install a newer qemu-system-x86_64 on the host (it is used when new enough)"
    key=$(printf '%s' "$pkgver" | tr ':~/' '___')
    prefix=$VCRAM_QEMU_DIR/$key
    if [[ ! -e $prefix/.complete ]]; then
        vc_check_space "$VCRAM_QEMU_DIR" 700 "QEMU $pkgver and its libraries"
        rm -rf "$prefix" "$prefix.tmp" "$prefix.dl"
        dl=$prefix.dl
        tmp=$prefix.tmp
        mkdir -p "$dl/partial" "$tmp"
        log=$VCRAM_QEMU_DIR/download.log
        vc_log "  downloading $VCRAM_QEMU_PKG $pkgver from $VCRAM_QEMU_SUITE with its dependency closure"
        if ! vc_apt_get -y -q --download-only -t "$VCRAM_QEMU_SUITE" \
            -o "Dir::Cache::archives=$dl" install "$VCRAM_QEMU_PKG=$pkgver" >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            vc_die "downloading $VCRAM_QEMU_PKG $pkgver failed (log: $log); if the mirror moved on, run scripts/setup --refresh"
        fi
        vc_log "  unpacking $(find "$dl" -maxdepth 1 -name '*.deb' | wc -l) packages into $prefix"
        for deb in "$dl"/*.deb; do
            dpkg-deb -x "$deb" "$tmp" || vc_die "unpacking $deb failed"
        done
        vc_fix_symlinks "$tmp"
        vc_qemu_prefix_layout "$tmp"
        [[ -x $QP_BIN ]] || vc_die "the $VCRAM_QEMU_PKG package has no $QP_BIN"
        [[ -n $QP_LOADER ]] || vc_die "no ld-linux-x86-64.so.2 in the QEMU prefix $tmp"
        ver=$(vc_qemu_probe prefix "$QP_BIN" "$QP_LOADER" "$QP_LIBPATH" "$QP_DATADIR" "$QP_MODDIR") || rc=$?
        ver=${ver%%$'\n'*}
        [[ $rc == 0 ]] || vc_die "QEMU from the prefix $tmp does not run or lacks $VCRAM_QEMU_DEVICE (rc $rc)"
        mv -T "$tmp" "$prefix"
        rm -rf "$dl"
        printf '%s\n' "$pkgver" >"$prefix/.complete"
    fi
    vc_qemu_prefix_layout "$prefix"
    ver=$(vc_qemu_probe prefix "$QP_BIN" "$QP_LOADER" "$QP_LIBPATH" "$QP_DATADIR" "$QP_MODDIR") || rc=$?
    ver=${ver%%$'\n'*}
    [[ $rc == 0 ]] || vc_die "QEMU in $prefix does not run or lacks $VCRAM_QEMU_DEVICE; remove $prefix and run scripts/setup again"
    vc_qemu_select prefix "$QP_BIN" "$QP_LOADER" "$QP_LIBPATH" "$QP_DATADIR" "$QP_MODDIR" "$ver" "$pkgver"
    vc_log "  using QEMU $ver from $prefix"
    # Keep only the selected prefix and one other.
    local old
    while IFS= read -r old; do
        [[ $old == "$prefix" ]] && continue
        vc_log "  removing old QEMU prefix $old"
        rm -rf "$old"
    done < <(find "$VCRAM_QEMU_DIR" -mindepth 2 -maxdepth 2 -name .complete -printf '%T@ %h\n' | sort -rn | awk 'NR > 2 { print $2 }')
}

# Setup entry point: reuse a valid selection, else system QEMU, else prefix.
vc_qemu_ensure() {
    local force=${1:-0} sel=$VCRAM_QEMU_DIR/selected.env
    if [[ $force != 1 && -f $sel ]]; then
        local kind bin loader libpath datadir moddir ver pkgver rc=0 got
        kind=$(vc_env_get "$sel" QEMU_KIND) bin=$(vc_env_get "$sel" QEMU_BIN)
        loader=$(vc_env_get "$sel" QEMU_LOADER) libpath=$(vc_env_get "$sel" QEMU_LIBPATH)
        datadir=$(vc_env_get "$sel" QEMU_DATADIR) moddir=$(vc_env_get "$sel" QEMU_MODDIR)
        ver=$(vc_env_get "$sel" QEMU_VERSION) pkgver=$(vc_env_get "$sel" QEMU_PKG_VERSION)
        if [[ -x $bin ]]; then
            got=$(vc_qemu_probe "$kind" "$bin" "$loader" "$libpath" "$datadir" "$moddir") || rc=$?
            got=${got%%$'\n'*}
            if [[ $rc == 0 && $got == "$ver" ]]; then
                vc_log "  QEMU $ver ($kind${pkgver:+, $pkgver}) already set up"
                return 0
            fi
        fi
        vc_log "  the recorded QEMU selection no longer works; selecting again"
    fi
    vc_qemu_try_system && return 0
    vc_qemu_install_prefix
}
