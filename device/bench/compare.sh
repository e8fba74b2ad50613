#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
# Compare the vcram-device engine with the zstd CLI on 4 KiB pages of real files, and measure
# scanning, DISCARD through the vhost-user path, metadata and daemon memory, in one run.
#
#   device/bench/compare.sh [LEVEL...]        (default levels: 1 3)
#
# Environment: VCRAM_BENCH_DIR (work dir, default a new /tmp dir), VCRAM_BENCH_LIMIT (bytes
# per input, default 96M), VCRAM_BENCH_SECS (seconds per measurement, default 3).
# Prints a Markdown table (also written to $VCRAM_BENCH_DIR/results.md).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
levels=("$@")
[ ${#levels[@]} -gt 0 ] || levels=(1 3)
work=${VCRAM_BENCH_DIR:-$(mktemp -d /tmp/vcram-bench.XXXXXX)}
mkdir -p "$work"
limit=${VCRAM_BENCH_LIMIT:-96M}
secs=${VCRAM_BENCH_SECS:-3}
export VCRAM_BENCH_SECS=$secs

log() { printf '%s\n' "$*" >&2; }

if ! command -v zstd >/dev/null; then
    log "zstd CLI missing: installing it with apt"
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y zstd >&2 || { apt-get update >&2 && apt-get install -y zstd >&2; }
    else
        sudo apt-get install -y zstd >&2
    fi
fi

# Inputs: real data nobody here generated.
bin_tar=$work/usr-bin.tar
txt_tar=$work/usr-share-text.tar
if [ ! -s "$bin_tar" ]; then
    log "building $bin_tar (first $limit of a tar of /usr/bin)"
    (tar cf - /usr/bin 2>/dev/null || true) | head -c "$limit" > "$bin_tar"
fi
if [ ! -s "$txt_tar" ]; then
    log "building $txt_tar (first $limit of a tar of uncompressed text files under /usr/share)"
    find /usr/share -type f -size -4M \
        ! -name '*.gz' ! -name '*.xz' ! -name '*.bz2' ! -name '*.zst' ! -name '*.lz4' \
        ! -name '*.png' ! -name '*.jpg' ! -name '*.gif' ! -name '*.ico' ! -name '*.mo' \
        ! -name '*.so*' ! -name '*.pyc' ! -name '*.ttf' ! -name '*.otf' ! -name '*.woff*' \
        -print0 2>/dev/null | sort -z |
        xargs -0 grep -IlZ '' 2>/dev/null > "$work/text-files" || true
    (tar --null -T "$work/text-files" -cf - 2>/dev/null || true) | head -c "$limit" > "$txt_tar"
fi
ls -l "$bin_tar" "$txt_tar" >&2

log "building (release)"
cargo bench -p vcram-device --bench engine --no-run >&2 2>&1 | tail -1 >&2
cargo test --release -p vcram-device --test bench_vhost --no-run >&2 2>&1 | tail -1 >&2

val() { # key file
    awk -v k="$1" '$1 == k { print $2 }' "$2" | tail -1
}

zstd_cli() { # level file -> "mbps ratio"
    local out
    # zstd prints progress lines separated by CR; the last one with both speeds is the result
    out=$(zstd -b"$1" -B4096 -i"$secs" "$2" 2>&1 | tr '\r' '\n' | grep -E 'MB/s, +[0-9.]+ MB/s' | tail -1)
    local ratio mbps
    ratio=$(sed -E 's/.*\(x([0-9.]+)\).*/\1/' <<<"$out")
    mbps=$(grep -oE '[0-9.]+ MB/s' <<<"$out" | head -1 | awk '{print $1}')
    echo "$mbps $ratio"
}

engine() { # level file: the engine benchmark's "key value" lines
    VCRAM_BENCH_LEVEL=$1 cargo bench -q -p vcram-device --bench engine -- "$2" 2>/dev/null
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%+.2f%%", (a - b) * 100 / b; else print "-" }'; }
mib() { awk -v a="$1" 'BEGIN { printf "%.1f MiB", a / 1048576 }'; }

rows=()
scan_rows=()
summary=$work/summary.txt   # "key value" lines for the targets table
: > "$summary"
for f in "$bin_tar" "$txt_tar"; do
    name=$(basename "$f")
    for l in "${levels[@]}"; do
        log "zstd -b$l -B4096 $name"
        read -r cli_mbps cli_ratio < <(zstd_cli "$l" "$f")
        # each side twice, alternating (CLI, engine, CLI, engine), the faster of the two kept,
        # so load from other jobs on this machine does not favour one side
        e=$work/engine-$name-$l.txt
        log "engine level $l $name"
        engine "$l" "$f" > "$e.1"
        read -r cli2_mbps _ < <(zstd_cli "$l" "$f")
        cli_mbps=$(awk -v a="$cli_mbps" -v b="$cli2_mbps" 'BEGIN { print (a > b ? a : b) }')
        log "engine level $l $name (again)"
        engine "$l" "$f" > "$e.2"
        # speeds: the faster run; everything else (ratios, counts) is the same in both
        awk '$1 ~ /_(mbps|gbps)$/ { if (!($1 in v) || $2 > v[$1]) v[$1] = $2; next }
             { v[$1] = $2 } END { for (k in v) print k, v[k] }' "$e.1" "$e.2" > "$e"
        lib=$(val zstd_lib_mbps "$e"); store=$(val store_mbps "$e")
        rows+=("| $name | $l | $cli_mbps | $lib | $store | $(ratio "$store" "$cli_mbps")x | $cli_ratio | $(val zstd_lib_ratio "$e") | $(pct "$(val zstd_lib_ratio "$e")" "$cli_ratio") | $(val store_ratio "$e") | $(val store_ratio_physical "$e") |")
        {
            echo "speed_vs_cli $(ratio "$store" "$cli_mbps")"
            echo "ratio_diff_pct $(pct "$(val zstd_lib_ratio "$e")" "$cli_ratio" | tr -d '%+-')"
            echo "scan_gbps $(val scan_gbps "$e")"
            echo "meta $(val metadata_bytes_per_page "$e")"
        } >> "$summary"
        scan_rows+=("| $name | $l | $(val scan_gbps "$e") | $(val xxh3_gbps "$e") | $(val same_pages "$e") / $(val compressed_pages "$e") / $(val raw_pages "$e") | $(val granule_overhead_pct "$e")% | $(val metadata_bytes_per_page "$e") |")
    done
done

log "vhost-user path: DISCARD throughput and daemon memory"
vh=$work/vhost.txt
: > "$vh"
for f in "$bin_tar" "$txt_tar"; do
    VCRAM_BENCH_FILE=$f cargo test -q --release -p vcram-device --test bench_vhost -- \
        --ignored --nocapture --test-threads=1 rss_after_commit >> "$vh" 2>/dev/null
done
cargo test -q --release -p vcram-device --test bench_vhost -- \
    --ignored --nocapture --test-threads=1 discard_throughput >> "$vh" 2>/dev/null

{
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPU(s) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load average $(cut -d' ' -f1-3 /proc/loadavg); $(zstd --version | sed 's/\*//g;s/^ *//;s/ *$//'). One thread on each side; MB/s = input bytes per second per core."
    echo
    echo "| input | zstd level | zstd CLI MB/s | engine zstd MB/s | device store path MB/s | store path / CLI | CLI ratio | engine ratio | engine vs CLI | device ratio (exact images) | device ratio (physical: granule + metadata) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "| input | zstd level | scan unchanged pages GB/s | xxh3 alone GB/s | same / compressed / raw pages | granule overhead | metadata B/page |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${scan_rows[@]}"
    echo
    echo "Through the vhost-user path (real daemon, frontend harness, 256 MiB window of committed pages, 64 requests in flight, best of 3 passes):"
    echo
    echo "| DISCARD request shape | zeroing | pages/s |"
    echo "| --- | --- | --- |"
    grep '^discard_pages_per_s' "$vh" | while read -r _ mode shape per v; do
        echo "| ${shape#range_pages=} pages per range, ${per#ranges_per_req=} ranges per request | ${mode#mode=} | $(printf "%'d" "${v%.*}") |"
    done
    echo
    echo "Daemon memory after COMMIT of the whole input (level 1):"
    echo
    echo "| input | device ratio | held images + metadata | daemon RssAnon | RssAnon - held | RssShmem (window pages mapped from the shared memfd) | COMMIT via vhost MB/s | daemon scan of the window GB/s (best of 3) | after DISCARD of everything: held / RssAnon |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    awk '
        /^file / { if (f != "") print_row(); f = $2; n = split(f, p, "/"); name = p[n] }
        $1 == "device_ratio" { r = $2 } $1 == "held_bytes" { h = $2 } $1 == "rss_anon" { a = $2 }
        $1 == "rss_shmem" { s = $2 } $1 == "commit_vhost_mbps" { c = $2 } $1 == "daemon_scan_gbps" { g = $2 }
        $1 == "held_after_discard" { hd = $2 } $1 == "rss_anon_after_discard" { ad = $2 }
        function print_row() { printf "| %s | %s | %.1f MiB | %.1f MiB | %+.1f MiB | %.1f MiB | %s | %s | %.1f MiB / %.1f MiB |\n", name, r, h/1048576, a/1048576, (a-h)/1048576, s/1048576, c, g, hd/1048576, ad/1048576 }
        END { if (f != "") print_row() }
    ' "$vh"
    echo
    echo "Targets (worst case over the rows above):"
    echo
    echo "| target | measured | met |"
    echo "| --- | --- | --- |"
    # the target is for the default (memset); --punch-holes is opt-in and shown for comparison
    grep '^discard_pages_per_s' "$vh" | awk '$2 == "mode=memset" { print "discard", $5 }' >> "$summary"
    awk '$1 == "rss_anon" { a = $2 } $1 == "held_bytes" { h = $2 } $1 == "rss_anon_after_discard" { print "rss_over", ($2 - hd) / 1048576 } $1 == "held_after_discard" { hd = $2 } /^file / { if (a != "") print "rss_over", (a - h) / 1048576; a = "" } END { if (a != "") print "rss_over", (a - h) / 1048576 }' "$vh" >> "$summary"
    awk '$1 == "daemon_scan_gbps" { print "daemon_scan_gbps", $2 }' "$vh" >> "$summary"
    awk '
        function lo(k, v) { if (!(k in mn) || v < mn[k]) mn[k] = v }
        function hi(k, v) { if (!(k in mx) || v > mx[k]) mx[k] = v }
        $1 == "speed_vs_cli" { lo("speed", $2) } $1 == "ratio_diff_pct" { hi("ratio", $2) }
        $1 == "scan_gbps" { lo("scan", $2) } $1 == "daemon_scan_gbps" { lo("dscan", $2) }
        $1 == "meta" { hi("meta", $2) } $1 == "discard" { lo("discard", $2) } $1 == "rss_over" { hi("rss", $2) }
        function row(t, m, ok) { printf "| %s | %s | %s |\n", t, m, ok ? "yes" : "**no**" }
        END {
            row("compression speed >= 0.9x zstd CLI (device store path)", sprintf("%.2fx", mn["speed"]), mn["speed"] >= 0.9)
            row("ratio within 1% of zstd CLI", sprintf("%.2f%%", mx["ratio"]), mx["ratio"] <= 1)
            row("scan of unchanged pages >= 4 GB/s per core (engine / daemon)", sprintf("%.2f / %.2f GB/s", mn["scan"], mn["dscan"]), mn["scan"] >= 4 && mn["dscan"] >= 4)
            row("DISCARD >= 1 M pages/s through vhost-user (default zeroing)", sprintf("%.2f M pages/s", mn["discard"] / 1e6), mn["discard"] >= 1e6)
            row("metadata <= 16 B per page", sprintf("%d B", mx["meta"]), mx["meta"] <= 16)
            row("daemon RSS <= held images + metadata + 64 MiB (after COMMIT, and after DISCARD of everything)", sprintf("%+.1f MiB", mx["rss"]), mx["rss"] <= 64)
        }' "$summary"
} | tee "$work/results.md"
log "results in $work/results.md"
