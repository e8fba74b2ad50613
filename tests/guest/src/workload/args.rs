// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Command line of `vcram-workload` (clap; the help text is `USAGE`).

use super::pattern::PatternSpec;

pub const USAGE: &str = "\
usage: vcram-workload [options]

Allocates a buffer, binds it to a NUMA node, fills it with a pattern and checks
it (checksums per page, placement, migration, free, reuse). Reports KTAP on
stdout (default) or one JSON object (--json).

  --mib N               buffer size in MiB [64]
  --size SIZE           buffer size with a K/M/G suffix (bytes without one);
                        with --pattern file: and no size, the file's size
  --node LIST           node(s) to bind to, a kernel node list (1, 0-1, 0,2) [1]
  --policy P            mbind | set_mempolicy | none [mbind]; none = no policy
                        of our own (run it under numactl --membind=N); the
                        placement check still expects --node
  --pattern P           zero | byte:<v> | text | binary | random | half
                        | mix:<ratio> | mix:<kind>=<weight>,...
                        | file:<path>                          [mix:2]
  --seed N              seed of random data and of the text generator [1]
  --binary-dir DIR      where the binary corpus comes from [/usr/bin]
  --text-file PATH      text corpus from this file instead of the generator
  --populate            fault the buffer in with MADV_POPULATE_WRITE first
                        (so running out of memory is ENOMEM, not SIGBUS/OOM)
  --oom-score-adj N     write N to /proc/self/oom_score_adj first (a test
                        chooses whom the OOM killer takes: -1000 never)
  --thp on|off          MADV_HUGEPAGE / MADV_NOHUGEPAGE on the buffer
                        [kernel default]
  --migrate             move_pages all pages to --migrate-node and back,
                        checking status, placement and checksums
  --migrate-node N      the intermediate node of --migrate [0]
  --wait-scan SECONDS   wait, then verify checksums and placement again
                        (the device scans the window periodically)
  --bench read|write    sequential bandwidth over the buffer after the checks
  --passes N            bench passes [5]
  --hold                after the fill, placement and migration checks,
                        print a HOLD pid=... line (stderr with --json)
                        and wait for a line on stdin or SIGUSR1/SIGINT/
                        SIGTERM (EOF on stdin is not a release: a background
                        job waits for the signal); then verify checksums and
                        placement again (verify_after_scan), bench, free
  --hold-seconds N      hold for N seconds (or until released as --hold)
  --free munmap|dontneed  how the buffer is freed [munmap]
  --reuse               after the free, touch the range again (dontneed) or
                        a fresh mapping bound the same way (munmap) and check
                        that it reads back as zero and lies on the node
  --json                one JSON object on stdout instead of KTAP
  --dump PATH           write the pages the pattern gives (same size, seed,
                        corpora) to PATH and exit: for comparing the
                        device's ratio with zstd -b<level> -B4096 PATH
  -h, --help            this text

Exit status: 0 all checks passed; 1 a check failed; 2 usage error;
3 SIGBUS while touching the buffer (or MADV_POPULATE_WRITE: EFAULT);
4 ENOMEM while allocating or filling (mmap, MADV_POPULATE_WRITE).
When the fill stops early (3 or 4 from --populate), the later phases check
the pages filled so far; a failure there makes the status 1.
The kernel's usual answer to a bound allocation that cannot be met is the
OOM killer (SIGKILL, status 137 from the shell), which no program can
report; ENOMEM comes only from calls that return it.
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Mbind,
    SetMempolicy,
    None,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Mbind => "mbind",
            Policy::SetMempolicy => "set_mempolicy",
            Policy::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeMode {
    Munmap,
    DontNeed,
}

impl FreeMode {
    pub fn name(self) -> &'static str {
        match self {
            FreeMode::Munmap => "munmap",
            FreeMode::DontNeed => "dontneed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    Read,
    Write,
}

impl BenchMode {
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Read => "read",
            BenchMode::Write => "write",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Buffer size in bytes; `None`: the default, or the file's size.
    pub size: Option<u64>,
    pub nodes: Vec<u32>,
    pub policy: Policy,
    pub pattern: PatternSpec,
    pub seed: u64,
    pub binary_dir: String,
    pub text_file: Option<String>,
    pub populate: bool,
    pub oom_score_adj: Option<i32>,
    pub thp: Option<bool>,
    pub migrate: bool,
    pub migrate_node: u32,
    pub wait_scan: Option<f64>,
    pub bench: Option<BenchMode>,
    pub passes: u32,
    pub hold: bool,
    pub hold_seconds: Option<f64>,
    pub free: FreeMode,
    pub reuse: bool,
    pub json: bool,
    /// Write the pattern's pages to this file and exit (no allocation).
    pub dump: Option<String>,
}

pub const DEFAULT_SIZE: u64 = 64 << 20;

impl Default for Config {
    fn default() -> Self {
        Config {
            size: None,
            nodes: vec![1],
            policy: Policy::Mbind,
            pattern: PatternSpec::MixRatio(2.0),
            seed: 1,
            binary_dir: "/usr/bin".into(),
            text_file: None,
            populate: false,
            oom_score_adj: None,
            thp: None,
            migrate: false,
            migrate_node: 0,
            wait_scan: None,
            bench: None,
            passes: 5,
            hold: false,
            hold_seconds: None,
            free: FreeMode::Munmap,
            reuse: false,
            json: false,
            dump: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Run(Box<Config>),
    Help,
}

/// Parses a size: a number with an optional K/M/G/T suffix (powers of 1024,
/// optional trailing `B`/`iB`), or `0x` hex bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        't' | 'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n = crate::sysfs::parse_u64(num)?;
    n.checked_mul(1u64 << shift)
}

fn parse_secs(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// The command line as clap reads it; [`parse`] turns it into a [`Config`]. The help text is
/// [`USAGE`] (clap's own is off).
#[derive(clap::Parser, Debug)]
#[command(
    name = "vcram-workload",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct Cli {
    #[arg(short = 'h', long = "help")]
    help: bool,
    #[arg(long, value_parser = mib, overrides_with = "size")]
    mib: Option<u64>,
    #[arg(long, value_parser = size, overrides_with = "mib")]
    size: Option<u64>,
    #[arg(long = "node", alias = "nodes", value_parser = nodes)]
    node: Option<NodeList>,
    #[arg(long, value_parser = policy)]
    policy: Option<Policy>,
    #[arg(long, value_parser = PatternSpec::parse)]
    pattern: Option<PatternSpec>,
    #[arg(long, value_parser = u64_value)]
    seed: Option<u64>,
    #[arg(long)]
    binary_dir: Option<String>,
    #[arg(long)]
    text_file: Option<String>,
    #[arg(long)]
    populate: bool,
    #[arg(long, value_parser = oom_score_adj, allow_hyphen_values = true)]
    oom_score_adj: Option<i32>,
    #[arg(long, value_parser = thp)]
    thp: Option<bool>,
    #[arg(long)]
    migrate: bool,
    #[arg(long, value_parser = node_number)]
    migrate_node: Option<u32>,
    #[arg(long, value_parser = secs)]
    wait_scan: Option<f64>,
    #[arg(long, value_parser = bench)]
    bench: Option<BenchMode>,
    #[arg(long, value_parser = passes)]
    passes: Option<u32>,
    #[arg(long)]
    hold: bool,
    #[arg(long, value_parser = secs)]
    hold_seconds: Option<f64>,
    #[arg(long, value_parser = free)]
    free: Option<FreeMode>,
    #[arg(long)]
    reuse: bool,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    dump: Option<String>,
}

fn bad(v: &str) -> String {
    format!("bad value {v:?}")
}

fn mib(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << 20))
        .ok_or_else(|| bad(v))
}

fn size(v: &str) -> Result<u64, String> {
    parse_size(v).ok_or_else(|| bad(v))
}

/// One `--node` value (a list: clap must not take it for a repeated option).
#[derive(Clone, Debug)]
struct NodeList(Vec<u32>);

fn nodes(v: &str) -> Result<NodeList, String> {
    crate::sysfs::parse_node_list(v)
        .filter(|n| !n.is_empty() && n.iter().all(|&x| x < super::numa::MAX_NODES))
        .map(NodeList)
        .ok_or_else(|| bad(v))
}

fn node_number(v: &str) -> Result<u32, String> {
    v.parse()
        .ok()
        .filter(|&n| n < super::numa::MAX_NODES)
        .ok_or_else(|| bad(v))
}

fn u64_value(v: &str) -> Result<u64, String> {
    crate::sysfs::parse_u64(v).ok_or_else(|| bad(v))
}

fn oom_score_adj(v: &str) -> Result<i32, String> {
    v.parse()
        .ok()
        .filter(|n: &i32| (-1000..=1000).contains(n))
        .ok_or_else(|| bad(v))
}

fn secs(v: &str) -> Result<f64, String> {
    parse_secs(v).ok_or_else(|| bad(v))
}

fn passes(v: &str) -> Result<u32, String> {
    v.parse().ok().filter(|&n| n > 0).ok_or_else(|| bad(v))
}

fn policy(v: &str) -> Result<Policy, String> {
    match v {
        "mbind" => Ok(Policy::Mbind),
        "set_mempolicy" => Ok(Policy::SetMempolicy),
        "none" => Ok(Policy::None),
        _ => Err(bad(v)),
    }
}

fn thp(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(bad(v)),
    }
}

fn bench(v: &str) -> Result<BenchMode, String> {
    match v {
        "read" => Ok(BenchMode::Read),
        "write" => Ok(BenchMode::Write),
        _ => Err(bad(v)),
    }
}

fn free(v: &str) -> Result<FreeMode, String> {
    match v {
        "munmap" => Ok(FreeMode::Munmap),
        "dontneed" => Ok(FreeMode::DontNeed),
        _ => Err(bad(v)),
    }
}

/// Parses the arguments (without the program name). `-h`/`--help` anywhere asks for the help
/// text; errors are clap's messages (see --help).
pub fn parse<I, S>(args: I) -> Result<Parsed, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    use clap::Parser;
    let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string()).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Parsed::Help);
    }
    let cli = Cli::try_parse_from(std::iter::once("vcram-workload".to_string()).chain(args))
        .map_err(|e| e.to_string().trim_end().to_string())?;
    let d = Config::default();
    let c = Config {
        size: cli.size.or(cli.mib),
        nodes: cli.node.map_or(d.nodes, |n| n.0),
        policy: cli.policy.unwrap_or(d.policy),
        pattern: cli.pattern.unwrap_or(d.pattern),
        seed: cli.seed.unwrap_or(d.seed),
        binary_dir: cli.binary_dir.unwrap_or(d.binary_dir),
        text_file: cli.text_file,
        populate: cli.populate,
        oom_score_adj: cli.oom_score_adj,
        thp: cli.thp,
        migrate: cli.migrate,
        migrate_node: cli.migrate_node.unwrap_or(d.migrate_node),
        wait_scan: cli.wait_scan,
        bench: cli.bench,
        passes: cli.passes.unwrap_or(d.passes),
        hold: cli.hold,
        hold_seconds: cli.hold_seconds,
        free: cli.free.unwrap_or(d.free),
        reuse: cli.reuse,
        json: cli.json,
        dump: cli.dump,
    };
    if c.size == Some(0) {
        return Err("the buffer size must not be 0".into());
    }
    Ok(Parsed::Run(Box::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse(args).unwrap() {
            Parsed::Run(c) => *c,
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[]);
        assert_eq!(c, Config::default());
        assert_eq!(c.nodes, vec![1]);
        assert_eq!(c.policy, Policy::Mbind);
        assert_eq!(c.free, FreeMode::Munmap);
    }

    #[test]
    fn full_command_line() {
        let c = run(&[
            "--mib",
            "16",
            "--node=0-1",
            "--policy",
            "set_mempolicy",
            "--pattern",
            "mix:3",
            "--seed",
            "0x10",
            "--migrate",
            "--migrate-node",
            "2",
            "--wait-scan",
            "1.5",
            "--free",
            "dontneed",
            "--reuse",
            "--hold-seconds=3",
            "--bench",
            "write",
            "--passes",
            "2",
            "--json",
            "--populate",
            "--thp",
            "off",
            "--oom-score-adj=-1000",
        ]);
        assert_eq!(c.oom_score_adj, Some(-1000));
        assert_eq!(c.size, Some(16 << 20));
        assert_eq!(c.nodes, vec![0, 1]);
        assert_eq!(c.policy, Policy::SetMempolicy);
        assert_eq!(c.pattern, PatternSpec::MixRatio(3.0));
        assert_eq!(c.seed, 16);
        assert!(c.migrate && c.reuse && c.json && c.populate);
        assert_eq!(c.migrate_node, 2);
        assert_eq!(c.wait_scan, Some(1.5));
        assert_eq!(c.free, FreeMode::DontNeed);
        assert_eq!(c.hold_seconds, Some(3.0));
        assert_eq!(c.bench, Some(BenchMode::Write));
        assert_eq!(c.passes, 2);
        assert_eq!(c.thp, Some(false));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("0x1000"), Some(4096));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(run(&["--size", "2M"]).size, Some(2 << 20));
        // the last of --mib and --size wins
        assert_eq!(run(&["--size", "2M", "--mib", "3"]).size, Some(3 << 20));
        assert_eq!(run(&["--mib", "3", "--size", "2M"]).size, Some(2 << 20));
        // a repeated option: the last value wins
        assert_eq!(run(&["--passes", "2", "--passes", "7"]).passes, 7);
    }

    #[test]
    fn errors() {
        assert!(parse(["--bogus"]).is_err());
        assert!(parse(["--mib"]).is_err());
        assert!(parse(["--mib", "x"]).is_err());
        assert!(parse(["--mib", "0"]).is_err());
        assert!(parse(["--node", "3-1"]).is_err());
        assert!(parse(["--node", ""]).is_err());
        assert!(parse(["--node", "5000"]).is_err());
        assert!(parse(["--policy", "interleave"]).is_err());
        assert!(parse(["--pattern", "byte:300"]).is_err());
        assert!(parse(["--free", "later"]).is_err());
        assert!(parse(["--wait-scan", "-1"]).is_err());
        assert!(parse(["--passes", "0"]).is_err());
        assert!(parse(["--oom-score-adj", "-1001"]).is_err());
        assert!(parse(["--json=1"]).is_err());
        assert!(parse(["--dump"]).is_err());
        assert_eq!(parse(["--help"]).unwrap(), Parsed::Help);
        assert_eq!(parse(["-h", "--bogus"]).unwrap(), Parsed::Help);
    }
}
