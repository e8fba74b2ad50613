# shellcheck shell=bash source-path=SCRIPTDIR
# Private apt state for packages from suites the host does not use
# (trixie, trixie-backports, bookworm-backports). The host's apt sources are
# never changed: we read the mirror URI from them and run apt-get with our
# own state, lists, cache, source list and an empty dpkg status file.
# Needs scripts/lib/common.sh.

VCRAM_APT_SUITES=${VCRAM_APT_SUITES:-"trixie trixie-backports bookworm-backports"}
VCRAM_APT_DIR=$VCRAM_CACHE/apt
VCRAM_APT_KEYRING=${VCRAM_APT_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

# The host's base suite (bookworm on Debian 12).
vc_apt_base_suite() {
    local codename=""
    if [[ -r /etc/os-release ]]; then
        codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME-}")
    fi
    printf '%s' "${codename:-bookworm}"
}

# Print the Debian mirror URI the host uses for its base suite.
# Looks at deb822 /etc/apt/sources.list.d/*.sources (stanza whose Suites
# contain the base suite), then one-line /etc/apt/sources.list{,.d/*.list}.
# VCRAM_APT_MIRROR overrides.
vc_apt_mirror() {
    if [[ -n ${VCRAM_APT_MIRROR-} ]]; then
        printf '%s\n' "$VCRAM_APT_MIRROR"
        return 0
    fi
    local base uri f
    base=$(vc_apt_base_suite)
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        uri=$(awk -v base="$base" '
            function flush() {
                if (types ~ /(^|[ \t])deb($|[ \t])/ && (" " suites " ") ~ (" " base " ") && uris != "" && enabled != "no") {
                    split(uris, u, /[ \t]+/); print u[1]; found = 1; exit
                }
                types = ""; suites = ""; uris = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val); gsub(/[ \t]+/, " ", val)
                if (key == "types") types = val
                else if (key == "suites") suites = val
                else if (key == "uris") uris = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { if (!found) flush() }
        ' "$f")
        if [[ -n $uri ]]; then
            printf '%s\n' "${uri%/}"
            return 0
        fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        uri=$(awk -v base="$base" '
            /^[ \t]*deb[ \t]/ {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == base) { print $i; exit }
            }
        ' "$f")
        if [[ -n $uri ]]; then
            printf '%s\n' "${uri%/}"
            return 0
        fi
    done
    return 1
}

# Options that point apt-get/apt-cache at the private state.
vc_apt_opts() {
    local d=$VCRAM_APT_DIR
    printf '%s\n' \
        -o "Dir::State=$d/state" \
        -o "Dir::State::Lists=$d/state/lists" \
        -o "Dir::State::status=$d/state/status" \
        -o "Dir::State::extended_states=$d/state/extended_states" \
        -o "Dir::Cache=$d/cache" \
        -o "Dir::Cache::archives=$d/archives" \
        -o "Dir::Etc::SourceList=$d/sources.list" \
        -o "Dir::Etc::SourceParts=$d/empty.d" \
        -o "Dir::Etc::Preferences=$d/preferences" \
        -o "Dir::Etc::PreferencesParts=$d/empty.d" \
        -o "APT::Architecture=amd64" \
        -o "APT::Architectures=amd64" \
        -o "APT::Install-Recommends=false" \
        -o "APT::Install-Suggests=false" \
        -o "APT::Default-Release=" \
        -o "APT::Sandbox::User=root" \
        -o "Acquire::Languages=none" \
        -o "Debug::NoLocking=true" \
        -o "Dpkg::Use-Pty=false" \
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
}

# vc_apt_get ARGS...: apt-get with the private state.
vc_apt_get() {
    local -a opts
    mapfile -t opts < <(vc_apt_opts)
    apt-get "${opts[@]}" "$@"
}

vc_apt_cache() {
    local -a opts
    mapfile -t opts < <(vc_apt_opts)
    apt-cache "${opts[@]}" "$@"
}

# Create the private state and download its package lists when they are
# missing or when FORCE=1 is passed.
vc_apt_prepare() {
    local force=${1:-0} mirror d=$VCRAM_APT_DIR suite stamp
    mkdir -p "$d/state/lists/partial" "$d/cache" "$d/archives/partial" "$d/empty.d"
    [[ -e $d/state/status ]] || : >"$d/state/status"
    [[ -e $d/preferences ]] || : >"$d/preferences"
    mirror=$(vc_apt_mirror) || vc_die "cannot find the Debian mirror in this machine's apt sources (/etc/apt/sources.list{,.d}); set VCRAM_APT_MIRROR=<uri>"
    [[ -r $VCRAM_APT_KEYRING ]] || vc_die "Debian archive keyring $VCRAM_APT_KEYRING missing (apt-get install debian-archive-keyring)"
    {
        for suite in $VCRAM_APT_SUITES; do
            printf 'deb [signed-by=%s] %s %s main\n' "$VCRAM_APT_KEYRING" "$mirror" "$suite"
        done
    } >"$d/sources.list.new"
    if ! cmp -s "$d/sources.list.new" "$d/sources.list" 2>/dev/null; then
        mv -f "$d/sources.list.new" "$d/sources.list"
        rm -f "$d/state/.updated"
    else
        rm -f "$d/sources.list.new"
    fi
    stamp=$d/state/.updated
    # Lists are fetched once and then only on request (setup --refresh) or
    # when a wanted version is missing, so that cached runs stay fast and
    # reproducible (pin the kernel with kernel-patches/BASE).
    if [[ $force == 1 || ! -e $stamp ]]; then
        vc_log "  apt (private state): updating lists for $VCRAM_APT_SUITES from $mirror"
        local log=$d/update.log
        if ! vc_apt_get -q update >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            vc_die "apt-get update of the private state failed (log: $log)"
        fi
        if grep -qE '^(W|E): ' "$log"; then
            grep -E '^(W|E): ' "$log" | sed 's/^/  /' >&2
        fi
        touch "$stamp"
    fi
}

# vc_apt_versions PKG -> the versions of PKG the private state knows, one per line.
vc_apt_versions() {
    vc_apt_cache madison "$1" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }'
}
