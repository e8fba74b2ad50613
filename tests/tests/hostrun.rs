//! `scripts/run -- COMMAND`: host programs in the guest (the host's root read-only over
//! virtio-9p, a tmpfs overlay), bound by the user to the private node, counted by the device.
//! End to end: scripts/run, vcram-device, QEMU, the guest kernel, vcram.ko, the host's own
//! programs (sh, numactl, python3).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use vcram_e2e::device::release_binary;
use vcram_e2e::guest::require_platform;
use vcram_e2e::repo_root;

/// One guest at a time (two cores, TCG).
static GUEST: Mutex<()> = Mutex::new(());

struct RunOut {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl RunOut {
    fn transcript(&self) -> String {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The boot log path scripts/run printed.
    fn boot_log(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("[run] boot log: "))
            .unwrap_or_else(|| panic!("no boot log path\n{}", self.transcript()))
            .to_string()
    }

    /// The device's vhost-user socket (in scripts/run's run directory).
    fn device_socket(&self) -> Option<String> {
        self.stderr.lines().find_map(|l| {
            let rest = l.strip_prefix("[run] starting vcram-device --socket ")?;
            rest.split_whitespace().next().map(str::to_string)
        })
    }

    /// Nothing of this run is left running: no QEMU writing its boot log, no vcram-device on
    /// its socket.
    fn assert_stopped(&self) {
        let mut needles = vec![self.boot_log()];
        needles.extend(self.device_socket());
        for n in needles {
            let o = Command::new("pgrep").args(["-f", &n]).output().unwrap();
            assert!(
                o.stdout.is_empty(),
                "still running with {n}: {}\n{}",
                String::from_utf8_lossy(&o.stdout),
                self.transcript()
            );
        }
    }
}

/// The guest program's line "anon-pages-N0 X N1 Y" (its anonymous pages per node, from
/// numa_maps) and Y.
fn anon_pages_n1(r: &RunOut) -> (String, u64) {
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("anon-pages-N0 "))
        .unwrap_or_else(|| panic!("{}", r.transcript()));
    let n1 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    (line.to_string(), n1)
}

fn run(args: &[&str]) -> RunOut {
    require_platform();
    release_binary("vcram-device");
    let _g = GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let o: Output = Command::new(repo_root().join("scripts/run"))
        .arg("--no-setup")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("scripts/run");
    RunOut {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).to_string(),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

#[test]
fn command_output_and_exit_status_come_back_and_the_boot_log_stays_in_its_file() {
    let r = run(&[
        "--",
        "sh",
        "-c",
        "echo \"out:$1:$(id -u):$(cat /proc/sys/kernel/hostname)\"; test -d /usr/share/doc; exit 7",
        "sh",
        "it's a \"quoted\" arg",
    ]);
    assert_eq!(r.code, Some(7), "{}", r.transcript());
    // The host's sh ran in the guest (hostname vcram), with the argument intact.
    assert!(
        r.stdout
            .lines()
            .any(|l| l == "out:it's a \"quoted\" arg:0:vcram"),
        "{}",
        r.transcript()
    );
    // Quiet terminal: no kernel boot log on either stream; it is in the file.
    for s in [&r.stdout, &r.stderr] {
        assert!(!s.contains("Linux version"), "{}", r.transcript());
    }
    let log = std::fs::read_to_string(r.boot_log()).unwrap();
    assert!(log.contains("Linux version"), "{log}");
    assert!(log.contains("vcram-exit: 7"), "{log}");
    assert!(
        r.stderr.contains("device stats at the end"),
        "{}",
        r.transcript()
    );
    r.assert_stopped();
}

/// A host program (python3) bound to node 1 with numactl: the device stores its pages (the
/// periodic stats show them), and the free at its exit comes back as DISCARD.
#[test]
fn host_program_bound_to_node_1_is_counted_by_the_device() {
    // 24 MiB of real text (the dictionary and the licences), held on node 1 until the device's
    // own count (its config space, read by vcram.ko's sysfs) covers it, then 3 s more for
    // the stats lines.
    let prog = r#"
import glob, sys, time
text = b"".join(open(f, "rb").read() for f in ["/usr/share/dict/words"] + sorted(glob.glob("/usr/share/common-licenses/*")) if not f.endswith("/") )
want = 24 << 20
data = bytearray((text * (want // len(text) + 1))[:want])
pages = want // 4096
def stored():
    n = 0
    for p in glob.glob("/sys/bus/virtio/devices/virtio*/vcram/stored_pages"):
        n += int(open(p).read())
    return n
while stored() < pages:
    time.sleep(0.2)
print("node1-held", pages, "device-stored", stored(), flush=True)
time.sleep(3)
anon = {"N0": 0, "N1": 0}
for line in open("/proc/self/numa_maps"):
    if " anon=" in line:
        for f in line.split():
            if f[:3] in ("N0=", "N1="):
                anon[f[:2]] += int(f[3:])
print("anon-pages-N0", anon["N0"], "N1", anon["N1"], flush=True)
sys.exit(5)
"#;
    let r = run(&[
        "--stats-every",
        "1",
        "--",
        "numactl",
        "--membind=1",
        "python3",
        "-c",
        prog,
    ]);
    assert_eq!(r.code, Some(5), "{}", r.transcript());
    let held = r
        .stdout
        .lines()
        .find(|l| l.starts_with("node1-held "))
        .unwrap_or_else(|| panic!("{}", r.transcript()));
    let pages: u64 = held.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(pages, 6144);
    // Bound: the process's anonymous memory is on node 1 (its data among it).
    let (numa, n1) = anon_pages_n1(&r);
    assert!(n1 >= pages, "{numa}");
    // The periodic stats, printed by the host while the program held its data.
    let stored_max = r
        .stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("pages stored ")?.1;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or_else(|| panic!("no periodic stats line\n{}", r.transcript()));
    assert!(
        stored_max >= pages,
        "{stored_max} < {pages}\n{}",
        r.transcript()
    );
    // The end: the final table, with the program's pages discarded after its exit.
    let discards = r
        .stderr
        .lines()
        .find(|l| l.starts_with("discards "))
        .unwrap_or_else(|| panic!("{}", r.transcript()));
    let discarded: u64 = discards
        .split_whitespace()
        .rev()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(discarded >= pages, "{discards}\n{}", r.transcript());
    r.assert_stopped();
}

#[test]
fn command_not_found_in_the_guest() {
    let r = run(&["--", "vcram-no-such-command", "x"]);
    assert_eq!(r.code, Some(127), "{}", r.transcript());
    assert!(
        r.stderr
            .contains("'vcram-no-such-command' is not a command in the guest"),
        "{}",
        r.transcript()
    );
    r.assert_stopped();
}

#[test]
fn host_root_that_cannot_be_shared() {
    // Not a directory: refused before anything starts.
    let r = run(&["--host-root", "/nonexistent/root", "--", "true"]);
    assert_eq!(r.code, Some(3), "{}", r.transcript());
    assert!(
        r.stderr
            .contains("host root '/nonexistent/root' is not a directory"),
        "{}",
        r.transcript()
    );
    // A directory that is no root file system: the guest says so, everything stops.
    let empty = tempfile_dir();
    let r = run(&["--host-root", empty.to_str().unwrap(), "--", "true"]);
    assert_eq!(r.code, Some(3), "{}", r.transcript());
    assert!(r.stderr.contains("has no /bin/sh"), "{}", r.transcript());
    assert!(
        r.stderr.contains("could not be shared with the guest"),
        "{}",
        r.transcript()
    );
    r.assert_stopped();
    let _ = std::fs::remove_dir(&empty);
}

#[test]
fn bad_arguments() {
    for (args, needle) in [
        (&["--stats-every", "x", "--", "true"][..], "--stats-every"),
        (&["--stats-every", "2"][..], "go with '-- COMMAND'"),
        (&["--"][..], "needs a COMMAND"),
    ] {
        let r = run(args);
        assert_eq!(r.code, Some(2), "{args:?}\n{}", r.transcript());
        assert!(r.stderr.contains(needle), "{args:?}\n{}", r.transcript());
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vcram-empty-root-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    assert!(Path::new(&d).is_dir());
    d
}

/// `scripts/bench-workloads` runs the host's programs: a package that is not installed is
/// named, before anything starts (a `dpkg-query` in front of the real one says redis-server is
/// not installed).
#[test]
fn bench_workloads_names_a_missing_package() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vcram-fake-dpkg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stub = dir.join("dpkg-query");
    std::fs::write(
        &stub,
        "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = redis-server ] && { printf 'un '; exit 0; }; done\nexec /usr/bin/dpkg-query \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new(repo_root().join("scripts/bench-workloads"))
        .args(["--no-setup", "--out"])
        .arg(dir.join("out"))
        .env("PATH", path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("missing package(s): redis-server ("), "{err}");
    assert!(!dir.join("out").exists(), "nothing ran");
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis-server started as a researcher would, on its default TCP port (the guest's loopback),
/// bound to node 1 with numactl: redis-cli stores 20000 values over TCP and reads one back, and
/// the server's anonymous memory is on node 1.
#[test]
fn redis_on_loopback_tcp_bound_to_node_1() {
    let script = r#"
numactl --membind=1 redis-server --save '' --appendonly no --daemonize yes --logfile /tmp/redis.log || exit 3
i=0
until redis-cli ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 150 ]; then redis-cli ping; cat /tmp/redis.log; exit 4; fi
    sleep 0.2
done
v=$(head -c 256 /dev/urandom | od -An -tx1 -v | tr -d ' \n')
seq 1 20000 | sed "s/.*/SET key:& $v&/" | redis-cli >/dev/null
echo "dbsize $(redis-cli dbsize)"
echo "get-ok $(test "$(redis-cli get key:777)" = "${v}777" && echo 1 || echo 0)"
pid=$(pidof redis-server)
awk '/ anon=/ { for (i = 1; i <= NF; i++) { if ($i ~ /^N0=/) n0 += substr($i, 4); if ($i ~ /^N1=/) n1 += substr($i, 4) } }
     END { print "anon-pages-N0", n0 + 0, "N1", n1 + 0 }' /proc/"$pid"/numa_maps
redis-cli shutdown nosave >/dev/null 2>&1
exit 0
"#;
    let r = run(&["--", "sh", "-c", script]);
    assert_eq!(r.code, Some(0), "{}", r.transcript());
    assert!(
        r.stdout.lines().any(|l| l == "dbsize 20000"),
        "{}",
        r.transcript()
    );
    assert!(
        r.stdout.lines().any(|l| l == "get-ok 1"),
        "{}",
        r.transcript()
    );
    let (numa, n1) = anon_pages_n1(&r);
    // 20000 values of 512 bytes and more: at least 2500 pages on node 1.
    assert!(n1 >= 2500, "{numa}\n{}", r.transcript());
    r.assert_stopped();
}
