// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Fill patterns: what each page of the buffer contains.
//!
//! Every page's contents depend only on the pattern, the seed and the page
//! index, so a page can be regenerated; the checks nevertheless compare
//! against checksums taken after the fill.
//!
//! Page kinds and where their bytes come from:
//! - `zero`: all zero bytes (written, so the page is really allocated).
//! - `byte:<v>`: every byte `v`.
//! - `text`: an English-like text corpus generated deterministically from
//!   the seed (a fixed 200-word vocabulary, skewed word frequencies,
//!   sentences and paragraphs; 2.07:1 for `zstd -b1 -B4096`), or the
//!   file given by `--text-file`. Page `i` is corpus block `i mod blocks`.
//! - `binary`: the regular files of `--binary-dir` (default `/usr/bin`; in
//!   the guest initramfs that is busybox, numactl, stress-ng and our own
//!   programs), sorted by name, hard links and symbolic links skipped,
//!   concatenated up to the buffer size (at most 32 MiB), then tiled.
//! - `random`: SplitMix64 seeded by (seed, page index): incompressible.
//! - `half`: the first half of the page random, the second half zero: it
//!   compresses to a little over half a page with any compressor.
//! - `file:<path>`: the file's 4 KiB blocks in order (the last one zero
//!   padded), repeated if the buffer is larger than the file.
//! - `mix:<ratio>`: zero, half and random pages interleaved so that the
//!   nominal ratio (page count / (half/2 + random)) is `<ratio>`: with
//!   p = 1/ratio, half = min(1/3, 2p, 2(1-p)), random = p - half/2, and the
//!   rest zero pages. `mix:2` is a third of each.
//! - `mix:<kind>=<weight>,...`: kinds `zero`, `half`, `text`, `binary`,
//!   `random` in proportion to the weights, e.g.
//!   `mix:zero=1,text=1,binary=1,random=1`.
//!
//! In a mix, pages are assigned by error diffusion (each kind's count is
//! within one page of its share, and the kinds are spread evenly).

use super::hash::SplitMix64;
use std::fmt;
use std::io::Read;

/// One page's kind of contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Zero,
    Byte(u8),
    Half,
    Text,
    Binary,
    Random,
    File,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Zero => "zero",
            Kind::Byte(_) => "byte",
            Kind::Half => "half",
            Kind::Text => "text",
            Kind::Binary => "binary",
            Kind::Random => "random",
            Kind::File => "file",
        }
    }

    /// Nominal compressed size as a fraction of a page, where it does not
    /// depend on the compressor.
    pub fn nominal_cost(self) -> Option<f64> {
        match self {
            Kind::Zero | Kind::Byte(_) => Some(0.0),
            Kind::Half => Some(0.5),
            Kind::Random => Some(1.0),
            Kind::Text | Kind::Binary | Kind::File => None,
        }
    }

    fn parse_mix_kind(s: &str) -> Option<Kind> {
        Some(match s {
            "zero" => Kind::Zero,
            "half" => Kind::Half,
            "text" => Kind::Text,
            "binary" => Kind::Binary,
            "random" => Kind::Random,
            _ => return None,
        })
    }
}

/// The `--pattern` argument.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternSpec {
    Single(Kind),
    MixRatio(f64),
    MixWeights(Vec<(Kind, f64)>),
    File(String),
}

impl PatternSpec {
    pub fn parse(s: &str) -> Result<PatternSpec, String> {
        let simple = match s {
            "zero" => Some(Kind::Zero),
            "half" => Some(Kind::Half),
            "text" => Some(Kind::Text),
            "binary" => Some(Kind::Binary),
            "random" => Some(Kind::Random),
            _ => None,
        };
        if let Some(k) = simple {
            return Ok(PatternSpec::Single(k));
        }
        if let Some(v) = s.strip_prefix("byte:") {
            let b = crate::sysfs::parse_u64(v)
                .filter(|&b| b <= 255)
                .ok_or_else(|| format!("byte value {v:?} is not 0..255"))?;
            return Ok(PatternSpec::Single(Kind::Byte(b as u8)));
        }
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err("file: needs a path".into());
            }
            return Ok(PatternSpec::File(p.to_string()));
        }
        if let Some(m) = s.strip_prefix("mix:") {
            if !m.contains('=') {
                let r: f64 = m
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r >= 1.0)
                    .ok_or_else(|| format!("mix ratio {m:?} is not a number >= 1"))?;
                return Ok(PatternSpec::MixRatio(r));
            }
            let mut w = Vec::new();
            for part in m.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("mix part {part:?} is not kind=weight"))?;
                let kind = Kind::parse_mix_kind(k).ok_or_else(|| {
                    format!("mix kind {k:?} is not zero, half, text, binary or random")
                })?;
                let weight: f64 = v
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("mix weight {v:?} is not a number >= 0"))?;
                if w.iter().any(|&(k2, _)| k2 == kind) {
                    return Err(format!("mix kind {k} given twice"));
                }
                w.push((kind, weight));
            }
            if w.iter().all(|&(_, x)| x == 0.0) {
                return Err("mix weights are all zero".into());
            }
            return Ok(PatternSpec::MixWeights(w));
        }
        Err(format!(
            "unknown pattern {s:?} (zero, byte:<v>, text, binary, random, half, mix:<ratio>, mix:<kind>=<w>,..., file:<path>)"
        ))
    }

    /// The kinds and weights of the pattern.
    pub fn weights(&self) -> Vec<(Kind, f64)> {
        match self {
            PatternSpec::Single(k) => vec![(*k, 1.0)],
            PatternSpec::File(_) => vec![(Kind::File, 1.0)],
            PatternSpec::MixWeights(w) => w.iter().copied().filter(|&(_, x)| x > 0.0).collect(),
            PatternSpec::MixRatio(r) => ratio_weights(*r),
        }
    }
}

impl fmt::Display for PatternSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternSpec::Single(Kind::Byte(b)) => write!(f, "byte:{b}"),
            PatternSpec::Single(k) => f.write_str(k.name()),
            PatternSpec::MixRatio(r) => write!(f, "mix:{r}"),
            PatternSpec::MixWeights(w) => {
                f.write_str("mix:")?;
                for (i, (k, x)) in w.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}={x}", k.name())?;
                }
                Ok(())
            }
            PatternSpec::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// Zero/half/random shares whose nominal ratio is `ratio` (see the module
/// documentation).
pub fn ratio_weights(ratio: f64) -> Vec<(Kind, f64)> {
    let p = (1.0 / ratio.max(1.0)).clamp(0.0, 1.0);
    let half = (1.0f64 / 3.0).min(2.0 * p).min(2.0 * (1.0 - p));
    let random = (p - half / 2.0).max(0.0);
    let zero = (1.0 - half - random).max(0.0);
    [
        (Kind::Zero, zero),
        (Kind::Half, half),
        (Kind::Random, random),
    ]
    .into_iter()
    .filter(|&(_, w)| w > 1e-12)
    .collect()
}

/// Assigns a kind to each of `pages` pages by error diffusion.
pub fn plan(weights: &[(Kind, f64)], pages: usize) -> Vec<Kind> {
    let total: f64 = weights.iter().map(|w| w.1).sum();
    if weights.len() == 1 || total <= 0.0 {
        let k = weights.first().map_or(Kind::Zero, |w| w.0);
        return vec![k; pages];
    }
    let share: Vec<f64> = weights.iter().map(|w| w.1 / total).collect();
    let mut acc = vec![0.0f64; weights.len()];
    let mut out = Vec::with_capacity(pages);
    for _ in 0..pages {
        let mut best = 0;
        for j in 0..acc.len() {
            acc[j] += share[j];
            if acc[j] > acc[best] {
                best = j;
            }
        }
        acc[best] -= 1.0;
        out.push(weights[best].0);
    }
    out
}

/// Nominal ratio of a plan (pages / nominal compressed pages), when every
/// kind's cost is known; infinite for all-zero plans.
pub fn nominal_ratio(kinds: &[Kind]) -> Option<f64> {
    let mut cost = 0.0;
    for k in kinds {
        cost += k.nominal_cost()?;
    }
    Some(kinds.len() as f64 / cost)
}

/// Counts pages per kind, in kind order.
pub fn count_kinds(kinds: &[Kind]) -> Vec<(Kind, usize)> {
    let mut out: Vec<(Kind, usize)> = Vec::new();
    for &k in kinds {
        match out.iter_mut().find(|(k2, _)| *k2 == k) {
            Some(e) => e.1 += 1,
            None => out.push((k, 1)),
        }
    }
    out.sort();
    out
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "that",
    "for",
    "was",
    "on",
    "are",
    "as",
    "with",
    "be",
    "at",
    "by",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "not",
    "but",
    "what",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "an",
    "your",
    "which",
    "their",
    "said",
    "if",
    "do",
    "will",
    "each",
    "about",
    "how",
    "up",
    "out",
    "them",
    "then",
    "she",
    "many",
    "some",
    "so",
    "these",
    "would",
    "other",
    "into",
    "has",
    "more",
    "her",
    "two",
    "like",
    "him",
    "see",
    "time",
    "could",
    "no",
    "make",
    "than",
    "first",
    "been",
    "its",
    "who",
    "now",
    "people",
    "my",
    "made",
    "over",
    "did",
    "down",
    "only",
    "way",
    "find",
    "use",
    "may",
    "water",
    "long",
    "little",
    "very",
    "after",
    "words",
    "called",
    "just",
    "where",
    "most",
    "know",
    "get",
    "through",
    "back",
    "much",
    "before",
    "go",
    "good",
    "new",
    "write",
    "our",
    "used",
    "me",
    "man",
    "too",
    "any",
    "day",
    "same",
    "right",
    "look",
    "think",
    "also",
    "around",
    "another",
    "came",
    "come",
    "work",
    "three",
    "word",
    "must",
    "because",
    "does",
    "part",
    "even",
    "place",
    "well",
    "such",
    "here",
    "take",
    "why",
    "things",
    "help",
    "put",
    "years",
    "different",
    "away",
    "again",
    "off",
    "went",
    "old",
    "number",
    "great",
    "tell",
    "men",
    "say",
    "small",
    "every",
    "found",
    "still",
    "between",
    "name",
    "should",
    "home",
    "big",
    "give",
    "air",
    "line",
    "set",
    "own",
    "under",
    "read",
    "last",
    "never",
    "us",
    "left",
    "end",
    "along",
    "while",
    "might",
    "next",
    "sound",
    "below",
    "saw",
    "something",
    "thought",
    "both",
    "few",
    "those",
    "always",
    "looked",
    "show",
    "large",
    "often",
    "together",
    "asked",
    "house",
    "world",
    "going",
    "want",
    "school",
    "important",
    "until",
    "form",
    "food",
    "keep",
    "children",
    "feet",
    "land",
    "side",
    "without",
    "boy",
    "once",
    "animals",
    "life",
    "enough",
    "took",
    "sometimes",
    "four",
    "head",
    "above",
    "kind",
    "began",
    "almost",
    "memory",
    "page",
    "node",
    "device",
    "compressed",
];

/// Generates `len` bytes of English-like text from `seed`.
pub fn generate_text(seed: u64, len: usize) -> Vec<u8> {
    let mut r = SplitMix64::new(seed ^ 0x7465_7874_636F_7270);
    let mut out = Vec::with_capacity(len + 64);
    let mut in_paragraph = 0;
    while out.len() < len {
        let words = 5 + r.below(12) as usize;
        for w in 0..words {
            // skewed towards the frequent words at the front
            let u = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let word = WORDS[((u * u) * WORDS.len() as f64) as usize % WORDS.len()];
            if w == 0 {
                let mut c = word.chars();
                if let Some(f) = c.next() {
                    out.extend(f.to_uppercase().to_string().bytes());
                    out.extend(c.as_str().bytes());
                }
            } else {
                out.push(b' ');
                if r.below(40) == 0 {
                    out.extend(format!("{} ", r.below(2000)).bytes());
                }
                out.extend(word.bytes());
            }
            if w + 1 < words && r.below(9) == 0 {
                out.push(b',');
            }
        }
        out.push(b'.');
        in_paragraph += 1;
        if in_paragraph >= 3 + r.below(5) {
            out.extend(b"\n\n");
            in_paragraph = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// Concatenates the regular files of `dir` (sorted by name, symbolic links
/// and further hard links of a file skipped) up to `max` bytes. Returns the
/// bytes and the number of files used.
pub fn binary_corpus(dir: &str, max: usize) -> std::io::Result<(Vec<u8>, usize)> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut files = 0;
    for p in entries {
        if out.len() >= max {
            break;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !m.file_type().is_file() || m.len() == 0 || !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        let Ok(f) = std::fs::File::open(&p) else {
            continue;
        };
        let before = out.len();
        let _ = f.take((max - before) as u64).read_to_end(&mut out);
        if out.len() > before {
            files += 1;
        }
    }
    Ok((out, files))
}

/// Rounds a corpus up to whole pages (zero padded), at least one page.
fn page_align(mut v: Vec<u8>, page: usize) -> Vec<u8> {
    let len = v.len().max(1).div_ceil(page) * page;
    v.resize(len, 0);
    v
}

/// A pattern ready to fill pages: the plan and the corpora it needs.
pub struct Filler {
    pub page: usize,
    pub seed: u64,
    pub kinds: Vec<Kind>,
    text: Vec<u8>,
    binary: Vec<u8>,
    file: Vec<u8>,
    /// Where the corpora came from, for the report.
    pub sources: Vec<String>,
}

pub const BINARY_CORPUS_MAX: usize = 32 << 20;
pub const TEXT_CORPUS_MAX: usize = 4 << 20;

impl Filler {
    /// Prepares `spec` for `pages` pages of `page` bytes; reads corpora.
    pub fn new(
        spec: &PatternSpec,
        pages: usize,
        page: usize,
        seed: u64,
        binary_dir: &str,
        text_file: Option<&str>,
    ) -> Result<Filler, String> {
        let kinds = plan(&spec.weights(), pages);
        let used = |k: Kind| kinds.contains(&k);
        let bytes = pages.saturating_mul(page);
        let mut sources = Vec::new();
        let mut text = Vec::new();
        let mut binary = Vec::new();
        let mut file = Vec::new();
        if used(Kind::Text) {
            text = match text_file {
                Some(p) => {
                    let v = std::fs::read(p).map_err(|e| format!("text file {p}: {e}"))?;
                    sources.push(format!("text: {p}, {} bytes", v.len()));
                    v
                }
                None => {
                    let n = bytes.min(TEXT_CORPUS_MAX);
                    sources.push(format!("text: generated (seed {seed}), {n} bytes"));
                    generate_text(seed, n)
                }
            };
            text = page_align(text, page);
        }
        if used(Kind::Binary) {
            let (v, files) = binary_corpus(binary_dir, bytes.min(BINARY_CORPUS_MAX))
                .map_err(|e| format!("binary corpus {binary_dir}: {e}"))?;
            if v.is_empty() {
                return Err(format!("binary corpus: no regular files in {binary_dir}"));
            }
            sources.push(format!(
                "binary: {files} files of {binary_dir}, {} bytes",
                v.len()
            ));
            binary = page_align(v, page);
        }
        if let PatternSpec::File(p) = spec {
            let v = std::fs::read(p).map_err(|e| format!("pattern file {p}: {e}"))?;
            if v.is_empty() {
                return Err(format!("pattern file {p} is empty"));
            }
            sources.push(format!("file: {p}, {} bytes", v.len()));
            file = page_align(v, page);
        }
        Ok(Filler {
            page,
            seed,
            kinds,
            text,
            binary,
            file,
            sources,
        })
    }

    fn corpus_block<'a>(&self, corpus: &'a [u8], index: usize) -> &'a [u8] {
        let blocks = corpus.len() / self.page;
        let b = index % blocks;
        &corpus[b * self.page..(b + 1) * self.page]
    }

    /// Writes page `index`'s contents into `out` (one page).
    pub fn fill_page(&self, index: usize, out: &mut [u8]) {
        match self.kinds[index] {
            Kind::Zero => out.fill(0),
            Kind::Byte(b) => out.fill(b),
            Kind::Random => SplitMix64::for_page(self.seed, index as u64).fill(out),
            Kind::Half => {
                let (a, b) = out.split_at_mut(out.len() / 2);
                SplitMix64::for_page(self.seed, index as u64).fill(a);
                b.fill(0);
            }
            Kind::Text => out.copy_from_slice(self.corpus_block(&self.text, index)),
            Kind::Binary => out.copy_from_slice(self.corpus_block(&self.binary, index)),
            Kind::File => out.copy_from_slice(self.corpus_block(&self.file, index)),
        }
    }

    /// Pages of `file:` needed to hold the file once.
    pub fn file_pages(path: &str, page: usize) -> std::io::Result<u64> {
        let len = std::fs::metadata(path)?.len();
        Ok(len.max(1).div_ceil(page as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_patterns() {
        assert_eq!(
            PatternSpec::parse("zero").unwrap(),
            PatternSpec::Single(Kind::Zero)
        );
        assert_eq!(
            PatternSpec::parse("byte:0xa5").unwrap(),
            PatternSpec::Single(Kind::Byte(0xa5))
        );
        assert_eq!(
            PatternSpec::parse("byte:7").unwrap(),
            PatternSpec::Single(Kind::Byte(7))
        );
        assert_eq!(
            PatternSpec::parse("mix:2.5").unwrap(),
            PatternSpec::MixRatio(2.5)
        );
        assert_eq!(
            PatternSpec::parse("mix:zero=1,text=2").unwrap(),
            PatternSpec::MixWeights(vec![(Kind::Zero, 1.0), (Kind::Text, 2.0)])
        );
        assert_eq!(
            PatternSpec::parse("file:/a/b").unwrap(),
            PatternSpec::File("/a/b".into())
        );
        for bad in [
            "",
            "ones",
            "byte:256",
            "byte:",
            "mix:0.5",
            "mix:x",
            "mix:zero=1,zero=2",
            "mix:foo=1",
            "mix:zero=0",
            "mix:zero=-1",
            "file:",
        ] {
            assert!(PatternSpec::parse(bad).is_err(), "{bad:?}");
        }
        for s in ["zero", "byte:9", "mix:3", "mix:zero=1,random=2", "file:/x"] {
            assert_eq!(PatternSpec::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn ratio_weights_reach_the_ratio() {
        for r in [1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0, 100.0] {
            let w = ratio_weights(r);
            let sum: f64 = w.iter().map(|x| x.1).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{r}: {w:?}");
            let cost: f64 = w.iter().map(|x| x.0.nominal_cost().unwrap() * x.1).sum();
            assert!((1.0 / cost - r).abs() / r < 1e-9, "{r}: {w:?}");
            assert!(w.iter().all(|x| x.1 >= 0.0));
        }
        assert_eq!(ratio_weights(1.0), vec![(Kind::Random, 1.0)]);
        let w2 = ratio_weights(2.0);
        assert_eq!(w2.len(), 3);
        assert!(w2.iter().all(|x| (x.1 - 1.0 / 3.0).abs() < 1e-9));
    }

    #[test]
    fn plan_spreads_exact_shares() {
        let pages = 3000;
        let kinds = plan(&ratio_weights(4.0), pages);
        let zero = kinds.iter().filter(|&&k| k == Kind::Zero).count();
        // zero share at ratio 4 = 1 - 1/3 - (1/4 - 1/6) = 0.58333
        assert!(
            (zero as f64 / pages as f64 - 0.583333).abs() < 0.001,
            "{zero}"
        );
        let ratio = nominal_ratio(&kinds).unwrap();
        assert!((ratio - 4.0).abs() < 0.01, "{ratio}");
        // spread: no long run of one kind
        let longest = kinds
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap();
        assert!(longest <= 3, "{longest}");
        let counts = count_kinds(&plan(
            &[(Kind::Zero, 1.0), (Kind::Text, 1.0), (Kind::Random, 2.0)],
            400,
        ));
        assert_eq!(
            counts,
            vec![(Kind::Zero, 100), (Kind::Text, 100), (Kind::Random, 200)]
        );
        assert_eq!(plan(&[(Kind::Byte(3), 1.0)], 5), vec![Kind::Byte(3); 5]);
        assert_eq!(nominal_ratio(&[Kind::Text]), None);
    }

    #[test]
    fn text_is_deterministic_and_texty() {
        let a = generate_text(5, 10000);
        assert_eq!(a.len(), 10000);
        assert_eq!(a, generate_text(5, 10000));
        assert_ne!(a, generate_text(6, 10000));
        assert!(a
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\n'));
        let spaces = a.iter().filter(|&&b| b == b' ').count();
        assert!(spaces > 1000 && spaces < 3000, "{spaces}");
    }

    #[test]
    fn fills_pages() {
        let spec = PatternSpec::parse("mix:zero=1,half=1,random=1,text=1").unwrap();
        let f = Filler::new(&spec, 8, 4096, 9, "/nonexistent", None).unwrap();
        let mut p = vec![0xffu8; 4096];
        let mut q = vec![0u8; 4096];
        for i in 0..8 {
            f.fill_page(i, &mut p);
            f.fill_page(i, &mut q);
            assert_eq!(p, q, "page {i} not deterministic");
            let zeros = p.iter().filter(|&&b| b == 0).count();
            match f.kinds[i] {
                Kind::Zero => assert_eq!(zeros, 4096),
                Kind::Half => {
                    assert!(p[2048..].iter().all(|&b| b == 0));
                    assert!(zeros < 2048 + 64);
                }
                Kind::Random => assert!(zeros < 64),
                Kind::Text => assert!(p.iter().all(|&b| b.is_ascii())),
                k => panic!("unexpected {k:?}"),
            }
        }
        // binary corpus from a directory that does not exist is an error
        let spec = PatternSpec::Single(Kind::Binary);
        assert!(Filler::new(&spec, 1, 4096, 0, "/nonexistent", None).is_err());
    }

    #[test]
    fn file_and_binary_sources() {
        let dir = std::env::temp_dir().join(format!("vcram-workload-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, vec![1u8; 5000]).unwrap();
        std::fs::write(dir.join("b"), vec![2u8; 100]).unwrap();
        std::os::unix::fs::symlink(&a, dir.join("c")).unwrap();
        std::fs::hard_link(&a, dir.join("d")).unwrap();
        let (v, files) = binary_corpus(dir.to_str().unwrap(), 1 << 20).unwrap();
        assert_eq!(files, 2);
        assert_eq!(v.len(), 5100);
        let (v, _) = binary_corpus(dir.to_str().unwrap(), 3000).unwrap();
        assert_eq!(v.len(), 3000);

        let spec = PatternSpec::File(a.to_str().unwrap().into());
        assert_eq!(Filler::file_pages(a.to_str().unwrap(), 4096).unwrap(), 2);
        let f = Filler::new(&spec, 3, 4096, 0, "/", None).unwrap();
        let mut p = vec![0u8; 4096];
        f.fill_page(1, &mut p);
        assert!(p[..904].iter().all(|&b| b == 1) && p[904..].iter().all(|&b| b == 0));
        f.fill_page(2, &mut p);
        assert!(p.iter().all(|&b| b == 1), "the file repeats");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
