#!/usr/bin/env python3
"""Guest side of scripts/bench-workloads, run in the guest by `scripts/run -- python3 THIS`.

Every workload is a real program from a Debian package (the host's, through the shared root),
started bound to the private node 1 (numactl --membind=1) inside a memory cgroup, loaded with
data Debian ships (man pages, the dictionary, documentation) or, once, random bytes. While it
holds its data (idle or SIGSTOPped) the same pages are measured three ways:

  1. the device: its counters in config space (vcram.ko's sysfs), less those before the run;
  2. a dump of the pages: every present page of the process whose frame lies in the window
     (/proc/PID/pagemap, /proc/PID/mem), then `zstd -b1 -B4096` over the dump;
  3. zram with zstd, swap: the cgroup's memory pushed out with memory.reclaim, mm_stat read.
     When reclaim cannot take pages of the private node (swap used stays 0), the dump is
     written to a zram block device instead (same zstd per 4 KiB page), and the row says so.

Prints one line per workload: "BENCH-RESULT {json}"; progress on stderr.
"""

import glob
import gzip
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time

PAGE = 4096
LEVEL = 1
MIB = int(os.environ.get("BENCH_MIB", "48"))
ONLY = [w for w in os.environ.get("BENCH_ONLY", "").split(",") if w]
CG = "/sys/fs/cgroup/vcram-bench"


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def mark(name):
    """A line in the kernel log (and so the boot log) with the guest's clock."""
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"vcram-bench: {name}\n")
    except OSError:
        pass


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def vcram_dir():
    d = glob.glob("/sys/bus/virtio/devices/virtio*/vcram")
    if not d:
        sys.exit("bench: vcram.ko is not bound to a device (no .../vcram in sysfs)")
    return d[0]


VC = None


def dev():
    names = ["stored_pages", "same_pages", "zero_pages", "compressed_bytes", "raw_pages",
             "physical_used", "window_base", "window_size"]
    return {n: int(open(f"{VC}/{n}").read().split()[0], 0) for n in names}


def settle(what, cond=lambda d: True, quiet=1.5):
    """Wait until the device's count no longer changes (its scanner found every page)."""
    last, since = None, time.time()
    t0 = time.time()
    while True:
        d = dev()
        key = (d["stored_pages"], d["compressed_bytes"])
        if key != last:
            last, since = key, time.time()
        elif time.time() - since >= quiet and cond(d):
            return d
        if time.time() - t0 > 900:
            sys.exit(f"bench: the device's counters did not settle ({what})")
        time.sleep(0.25)


# ---- real data --------------------------------------------------------------------------

def man_text(limit):
    """Decompressed man pages (manpages, and whatever else is installed), up to limit bytes."""
    out, n = [], 0
    for f in sorted(glob.glob("/usr/share/man/man*/*.gz")):
        try:
            b = gzip.open(f).read()
        except OSError:
            continue
        out.append(b)
        n += len(b)
        if n >= limit:
            break
    return b"".join(out)


def corpus_lines():
    """Lines of real text: the dictionary, man pages, the copyright files of /usr/share/doc."""
    lines = open("/usr/share/dict/words", "rb").read().splitlines()
    lines += man_text(24 << 20).splitlines()
    for f in sorted(glob.glob("/usr/share/doc/*/copyright")):
        try:
            lines += open(f, "rb").read().splitlines()
        except OSError:
            pass
    return [l for l in lines if l.strip()]


# ---- the workload's process ------------------------------------------------------------------

def cg_setup():
    try:
        with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
            f.write("+memory")
    except OSError as e:
        sys.exit(f"bench: cannot enable the memory controller: {e}")
    os.makedirs(CG, exist_ok=True)


def spawn(argv, **kw):
    """Start argv bound to node 1 inside the bench cgroup (charged to it from the start)."""
    cmd = ["sh", "-c", f'echo $$ > {CG}/cgroup.procs && exec "$@"', "sh",
           "numactl", "--membind=1"] + argv
    return subprocess.Popen(cmd, **kw)


def rss_kib(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
    return 0


def dump_pages(pid, win_lo, win_hi, path):
    """Write every present page of pid whose frame is in [win_lo, win_hi) (pfns) to path."""
    seen = set()
    n = same = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm, \
            open(f"/proc/{pid}/mem", "rb") as mem, open(path, "wb") as out:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if "[vsyscall]" in line:
                continue
            npg = (hi - lo) // PAGE
            pm.seek(lo // PAGE * 8)
            ents = pm.read(npg * 8)
            for i in range(len(ents) // 8):
                e = struct.unpack_from("<Q", ents, i * 8)[0]
                if not e >> 63:
                    continue
                pfn = e & ((1 << 55) - 1)
                if not (win_lo <= pfn < win_hi) or pfn in seen:
                    continue
                seen.add(pfn)
                try:
                    mem.seek(lo + i * PAGE)
                    data = mem.read(PAGE)
                except OSError:
                    continue
                if len(data) != PAGE:
                    continue
                out.write(data)
                n += 1
                if data.count(data[:1]) == PAGE:
                    same += 1
    return n, same


def zstd_b(path):
    """zstd -b1 -B4096 on path: (input, compressed) bytes."""
    if os.path.getsize(path) == 0:
        return 0, 0
    r = subprocess.run(["zstd", f"-b{LEVEL}", "-B4096", "-q", path], capture_output=True,
                       text=True)
    text = r.stdout + r.stderr
    line = [l for l in text.splitlines() if " (" in l][-1]
    w = line.split()
    i = next(k for k, x in enumerate(w) if x.startswith("("))
    return os.path.getsize(path), int(w[i - 1])


def without_same(src, dst):
    with open(src, "rb") as i, open(dst, "wb") as o:
        while True:
            p = i.read(PAGE)
            if not p:
                break
            if p.count(p[:1]) != PAGE:
                o.write(p)


def mm_stat(z):
    v = [int(x) for x in open(f"/sys/block/{z}/mm_stat").read().split()]
    return {"orig": v[0], "compr": v[1], "mem_used": v[2], "same_pages": v[5]}


def zram_swap_on():
    sh("swapoff -a 2>/dev/null || true")
    z = "zram0"
    with open(f"/sys/block/{z}/reset", "w") as f:
        f.write("1")
    with open(f"/sys/block/{z}/comp_algorithm", "w") as f:
        f.write("zstd")
    algo = open(f"/sys/block/{z}/comp_algorithm").read()
    if "[zstd]" not in algo:
        sys.exit(f"bench: zram has no zstd: {algo.strip()}")
    with open(f"/sys/block/{z}/disksize", "w") as f:
        f.write(str(1 << 30))
    sh(f"mkswap /dev/{z} >/dev/null && swapon /dev/{z}")
    return z


def zram_swap_off(z):
    sh(f"swapoff /dev/{z}")
    with open(f"/sys/block/{z}/reset", "w") as f:
        f.write("1")


def zram_block(dump, level=None):
    """Write the dump to a zram block device (zstd, at `level` through algorithm_params, else
    zram's default), 4 KiB pages, and read mm_stat."""
    z = "zram1"
    if not os.path.exists(f"/sys/block/{z}"):
        open("/sys/class/zram-control/hot_add").read()
    with open(f"/sys/block/{z}/reset", "w") as f:
        f.write("1")
    with open(f"/sys/block/{z}/comp_algorithm", "w") as f:
        f.write("zstd")
    if level is not None:
        with open(f"/sys/block/{z}/algorithm_params", "w") as f:
            f.write(f"algo=zstd level={level}")
    with open(f"/sys/block/{z}/disksize", "w") as f:
        f.write(str(1 << 30))
    sh(f"dd if={dump} of=/dev/{z} bs=1M oflag=direct status=none")
    s = mm_stat(z)
    with open(f"/sys/block/{z}/reset", "w") as f:
        f.write("1")
    return s


def pageout(pid):
    """process_madvise(MADV_PAGEOUT) over every mapping of pid; returns the errno or 0."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    MADV_PAGEOUT, SYS_process_madvise = 21, 440

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    fd = os.pidfd_open(pid)
    err = 0
    try:
        for line in open(f"/proc/{pid}/maps"):
            if "[vsyscall]" in line:
                continue
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            iov = Iovec(lo, hi - lo)
            r = libc.syscall(SYS_process_madvise, fd, ctypes.byref(iov), 1, MADV_PAGEOUT, 0)
            if r < 0:
                err = ctypes.get_errno()
    finally:
        os.close(fd)
    return err


def swap_used_kib():
    for l in open("/proc/meminfo"):
        if l.startswith("SwapTotal:"):
            tot = int(l.split()[1])
        if l.startswith("SwapFree:"):
            free = int(l.split()[1])
    return tot - free


# ---- workloads ------------------------------------------------------------------------------

def wait_rss(p, kib, what):
    t0 = time.time()
    while rss_kib(p.pid) < kib:
        if p.poll() is not None:
            sys.exit(f"bench: {what} exited early with status {p.returncode}")
        if time.time() - t0 > 900:
            sys.exit(f"bench: {what} did not grow to {kib} KiB")
        time.sleep(0.2)


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis_load(values):
    sock = "/tmp/vcram-bench-redis.sock"
    if os.path.exists(sock):
        os.unlink(sock)
    p = spawn(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
              stdout=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.exists(sock):
        if p.poll() is not None or time.time() - t0 > 120:
            sys.exit("bench: redis-server did not start")
        time.sleep(0.2)
    s = socket.socket(socket.AF_UNIX)
    while True:
        try:
            s.connect(sock)
            break
        except ConnectionRefusedError:
            if p.poll() is not None or time.time() - t0 > 120:
                sys.exit("bench: redis-server does not accept connections")
            time.sleep(0.2)
    batch = []
    n = 0
    for i, v in enumerate(values):
        batch.append(resp(b"SET", b"key:%08d" % i, v))
        if len(batch) == 256:
            s.sendall(b"".join(batch))
            n += len(batch)
            batch = []
            got = b""
            while got.count(b"\r\n") < 256:
                got += s.recv(65536)
    if batch:
        s.sendall(b"".join(batch))
        got = b""
        while got.count(b"\r\n") < len(batch):
            got += s.recv(65536)
    s.sendall(resp(b"DBSIZE"))
    log("redis DBSIZE", s.recv(100).decode().strip())
    s.close()
    return p


def w_redis_text():
    text = b"\n".join(corpus_lines())
    size = 1024
    nvals = (MIB << 20) // (size + 80)
    # Values: consecutive 1 KiB slices of the text, as a client would store documents.
    span = len(text) - size
    vals = (text[(i * size) % span:(i * size) % span + size] for i in range(nvals))
    return redis_load(vals), "redis-server: 1 KiB values of man pages, dictionary, copyright text"


def w_redis_random():
    size = 1024
    nvals = (MIB << 20) // (size + 80)
    rnd = random.Random(1)
    vals = (rnd.randbytes(size) for _ in range(nvals))
    return redis_load(vals), "redis-server: 1 KiB random values"


def w_sqlite():
    lines = corpus_lines()
    path = "/tmp/corpus.tsv"
    with open(path, "wb") as f:
        budget = MIB << 19  # the table and its index each about half
        for i, l in enumerate(lines):
            l = l.replace(b"\t", b" ").replace(b'"', b"'")
            f.write(b"%d\t%s\n" % (i, l))
            budget -= len(l) + 8
            if budget <= 0:
                break
    p = spawn(["sqlite3", ":memory:"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
              text=True)
    p.stdin.write("PRAGMA cache_size=-1000000;\nCREATE TABLE lines(n INTEGER, line TEXT);\n"
                  f".mode tabs\n.import {path} lines\n"
                  "CREATE INDEX lines_text ON lines(line);\n"
                  "SELECT 'READY', count(*) FROM lines;\n")
    p.stdin.flush()
    ready = p.stdout.readline()
    log("sqlite3:", ready.strip())
    if not ready.startswith("READY"):
        sys.exit("bench: sqlite3 did not build its index")
    os.unlink(path)
    return p, "sqlite3 :memory:, a table of text lines and an index over them"


PY_HOLDER = r"""
import glob, gzip, sys, collections
limit = int(sys.argv[1])
index = collections.defaultdict(list)
docs = {}
n = 0
for f in sorted(glob.glob("/usr/share/man/man*/*.gz")):
    try:
        text = gzip.open(f).read().decode("utf-8", "replace")
    except OSError:
        continue
    lines = text.splitlines()
    docs[f] = lines
    for i, l in enumerate(lines):
        for w in l.split():
            index[w.lower()].append((f, i))
    n += len(text)
    if n >= limit:
        break
print("READY", len(docs), len(index), flush=True)
sys.stdin.read()
"""


def w_python():
    # The holder's data structures take several times the text they index.
    p = spawn(["python3", "-c", PY_HOLDER, str((MIB << 20) // 8)], stdin=subprocess.PIPE,
              stdout=subprocess.PIPE, text=True)
    ready = p.stdout.readline()
    log("python3:", ready.strip())
    if not ready.startswith("READY"):
        sys.exit("bench: the python holder failed")
    return p, "python3: man pages as lists of lines and a dict word -> [(page, line)]"


def w_zstd():
    # A compression job: tar of /usr/share/doc and /usr/share/man piped into zstd --long
    # (its window holds the real data it reads); stopped once it holds MIB.
    tar = subprocess.Popen(["tar", "-cf", "-", "/usr/share/doc", "/usr/share/man"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p = spawn(["zstd", "-3", "--long=27", "-T1", "-q", "-c"], stdin=tar.stdout,
              stdout=subprocess.DEVNULL)
    tar.stdout.close()
    wait_rss(p, MIB << 10, "zstd")
    os.kill(p.pid, signal.SIGSTOP)
    p._vcram_extra = tar
    return p, "zstd -3 --long=27 over a tar of /usr/share/doc and /usr/share/man (stopped)"


WORKLOADS = [
    ("redis-text", w_redis_text),
    ("redis-random", w_redis_random),
    ("sqlite3-index", w_sqlite),
    ("python3-index", w_python),
    ("zstd-compress", w_zstd),
]


def measure(name, fn):
    base = settle(f"{name}: idle before")
    mark(f"{name} start")
    log(f"{name}: starting")
    p, what = fn()
    # Everything the process holds is in place: stop it, let the device's scanner find it.
    os.kill(p.pid, signal.SIGSTOP)
    d = settle(f"{name}: holding", lambda d: d["stored_pages"] > base["stored_pages"], quiet=2.5)
    mark(f"{name} held")
    w_lo = d["window_base"] // PAGE
    w_hi = w_lo + d["window_size"] // PAGE
    dump = f"/tmp/{name}.pages"
    pages, same = dump_pages(p.pid, w_lo, w_hi, dump)
    zin, zout = zstd_b(dump)
    nos = dump + ".nosame"
    without_same(dump, nos)
    zin2, zout2 = zstd_b(nos)
    dv = {k: d[k] - base[k] for k in ["stored_pages", "same_pages", "zero_pages",
                                      "compressed_bytes", "raw_pages", "physical_used"]}
    # zram: swap on zram, the cgroup's memory pushed out.
    z = zram_swap_on()
    try:
        with open(f"{CG}/memory.reclaim", "w") as f:
            f.write(str(4 << 30))
    except OSError as e:
        log(f"{name}: memory.reclaim: {e.strerror} (what it could reclaim is out)")
    zs = mm_stat(z)
    method = "swap (memory.reclaim)"
    if zs["orig"] < pages * PAGE // 2:
        e = pageout(p.pid)
        zs2 = mm_stat(z)
        log(f"{name}: memory.reclaim took {zs['orig'] // PAGE} pages; "
            f"process_madvise(MADV_PAGEOUT) {zs2['orig'] // PAGE} (errno {e})")
        zs, method = zs2, "swap (MADV_PAGEOUT)"
    swapped = swap_used_kib()
    if zs["orig"] < pages * PAGE // 2:
        method = "block (reclaim and MADV_PAGEOUT took %d of %d pages)" % (zs["orig"] // PAGE,
                                                                        pages)
        zs = zram_block(dump)
    else:
        log(f"{name}: zram swap holds {zs['orig'] // PAGE} pages; same-filled among them "
            f"{zs['same_pages']}")
    log(f"{name}: zram {method}: {zs}; swap used {swapped} KiB")
    # The same pages without the same-filled ones, at the device's level, as a block device.
    z1 = zram_block(nos, level=LEVEL)
    log(f"{name}: zram block, zstd level {LEVEL}, pages without same-filled: {z1}")
    os.unlink(dump)
    os.unlink(nos)
    # Done: let the process go (SIGKILL frees its memory: DISCARD), wait for the device.
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    extra = getattr(p, "_vcram_extra", None)
    if extra:
        extra.kill()
        extra.wait()
    zram_swap_off(z)
    mark(f"{name} done")
    settle(f"{name}: after", lambda x: x["stored_pages"] <= base["stored_pages"] + 64)
    r = {
        "name": name, "what": what, "pages": pages, "dump_same_pages": same,
        "device": dv,
        "device_ratio": (dv["stored_pages"] * PAGE / dv["compressed_bytes"])
        if dv["compressed_bytes"] > 0 else None,
        "device_ratio_nonsame": ((dv["stored_pages"] - dv["same_pages"]) * PAGE
                                 / dv["compressed_bytes"]) if dv["compressed_bytes"] else None,
        "zstd": {"in": zin, "out": zout, "ratio": zin / zout if zout else None,
                 "nonsame_in": zin2, "nonsame_out": zout2,
                 "nonsame_ratio": zin2 / zout2 if zout2 else None},
        "zram": dict(zs, method=method,
                     ratio=zs["orig"] / zs["compr"] if zs["compr"] else None,
                     ratio_nonsame=(zs["orig"] - zs["same_pages"] * PAGE) / zs["compr"]
                     if zs["compr"] else None,
                     ratio_mem=zs["orig"] / zs["mem_used"] if zs["mem_used"] else None),
        "zram_level1_nonsame": dict(z1, ratio=z1["orig"] / z1["compr"] if z1["compr"] else None),
    }
    print("BENCH-RESULT " + json.dumps(r), flush=True)


def main():
    global VC
    VC = vcram_dir()
    for prog in ["numactl", "redis-server", "sqlite3", "zstd", "mkswap", "swapon", "tar"]:
        if subprocess.run(["sh", "-c", f"command -v {prog}"], capture_output=True).returncode:
            sys.exit(f"bench: {prog} is not installed (scripts/setup installs it)")
    if not os.path.exists("/usr/share/dict/words"):
        sys.exit("bench: /usr/share/dict/words is missing (package wamerican; scripts/setup)")
    if not os.path.exists("/sys/block/zram0"):
        sys.exit("bench: the guest kernel has no zram (CONFIG_ZRAM; scripts/setup rebuilds it)")
    cg_setup()
    for name, fn in WORKLOADS:
        if ONLY and name not in ONLY:
            continue
        measure(name, fn)


if __name__ == "__main__":
    main()
