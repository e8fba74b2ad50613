//! The daemon's timeline and its consumers: `vcramctl record` (CSV), `vcramctl plot` (PNG and
//! SVG of the recorded series), and `--metrics-listen` (Prometheus over real HTTP).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vcram_device::protocol::*;
use vcram_device::stats::Snapshot;
use vcram_device::timeline::{Reply, Sample};

/// Wait until the daemon's timeline holds a sample for which `f` holds (the sampler runs
/// every 20 ms here); the bound only guards against a hang.
fn wait_sample(d: &Daemon, what: &str, f: impl Fn(&Sample) -> bool) {
    let t0 = Instant::now();
    loop {
        let r: Reply = serde_json::from_str(&d.ctl("timeline 0")).unwrap();
        if r.samples.iter().any(&f) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no timeline sample with {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Points of the SVG polylines drawn in `color` (plotters writes one polyline per series),
/// without the legend's two-point samples.
fn svg_polyline_points(svg: &str, color: &str) -> Vec<Vec<(f64, f64)>> {
    let doc = roxmltree::Document::parse(svg).expect("the SVG parses as XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some("1200"));
    assert_eq!(root.attribute("height"), Some("1100"));
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(color))
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .filter(|p| p.len() > 2)
        .collect()
}

fn png_pixels(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "plotters writes RGB");
    let px = buf[..info.buffer_size()]
        .chunks(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

#[test]
fn record_and_plot_the_timeline() {
    let d = Daemon::start(&["--physical-size", "8M", "--timeline-interval-ms", "20"]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    // 16 pages of text and 1008 of noise (stored raw: 4 MiB, half the capacity, so that the
    // drop after the discard shows in the picture).
    for i in 0..16 {
        g.write(g.window_page(i), &text_page(i));
    }
    for i in 16..1024 {
        g.write(g.window_page(i), &random_page(i));
    }
    let (_, r) = c.request(&g, VCRAM_REQ_COMMIT, &[(g.window_page(0), 1024)]);
    assert_eq!(u32::from(r.status), VCRAM_S_OK);
    wait_sample(&d, "1024 pages stored", |s| s.stored_pages == 1024);
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(512), 512)]);
    assert_eq!(u32::from(r.status), VCRAM_S_OK);
    wait_sample(&d, "512 pages discarded", |s| s.discard_pages == 512);
    let stats: Snapshot = d.stats();

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let ctl = d.control.to_str().unwrap();
    let (ok, _, err) = vcramctl(&[
        "--socket",
        ctl,
        "record",
        "--history",
        "--seconds",
        "0.2",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("samples recorded"), "{err}");

    // The CSV: one row per sample, in order, through both states.
    let rows: Vec<Sample> = csv::Reader::from_path(&csv)
        .unwrap()
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(rows.len() >= 3, "{} rows", rows.len());
    assert!(rows
        .windows(2)
        .all(|w| w[1].seq > w[0].seq && w[1].unix_ms >= w[0].unix_ms));
    let full = rows
        .iter()
        .position(|s| s.stored_pages == 1024 && s.discard_pages == 0)
        .expect("a row with 1024 pages stored");
    let after = rows
        .iter()
        .position(|s| s.stored_pages == 512 && s.discard_pages == 512)
        .expect("a row after the discard");
    assert!(full < after);
    let last = rows.last().unwrap();
    assert_eq!(last.physical_capacity, 8 << 20);
    assert_eq!(last.physical_used, stats.physical_used);
    assert!((last.ratio - stats.ratio).abs() < 1e-9);
    assert!(
        rows[full].ratio > 1.0,
        "text compresses: {}",
        rows[full].ratio
    );

    // SVG: valid XML of the figure's size, the ratio drawn as one point per sample.
    let svg = dir.path().join("t.svg");
    let (ok, _, err) = vcramctl(&["plot", csv.to_str().unwrap(), "-o", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    // The ratio (purple): only where the device holds compressed data, one point per sample.
    let ratio = svg_polyline_points(&text, "#7800C8");
    let with_data = rows.iter().filter(|s| s.compressed_bytes > 0).count();
    assert_eq!(
        ratio.iter().map(Vec::len).sum::<usize>(),
        with_data,
        "{ratio:?}"
    );
    // Physical use (blue): one point per sample with a capacity (all, once connected).
    let blue = svg_polyline_points(&text, "#0000FF");
    assert_eq!(blue.len(), 1, "{blue:?}");
    let first = rows.iter().position(|s| s.physical_capacity > 0).unwrap();
    assert_eq!(blue[0].len(), rows.len() - first);
    // Physical use rises with the pages and falls after the discard (y grows downwards).
    assert!(rows[full].physical_used > rows[after].physical_used);
    let (y_full, y_after) = (blue[0][full - first].1, blue[0][after - first].1);
    assert!(y_full < y_after, "{y_full} vs {y_after}");
    // Discards per second (green): zero before, positive at the discard.
    let green = svg_polyline_points(&text, "#00FF00");
    assert_eq!(green.len(), 1);
    assert_eq!(green[0].len(), rows.len());
    let base_y = green[0][0].1;
    assert!(green[0][..=full].iter().all(|p| p.1 == base_y));
    assert!(green[0][full + 1..=after].iter().any(|p| p.1 < base_y));
    for needle in [
        "compression ratio",
        "physical use",
        "pressure level",
        "discards",
        "high watermark",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the SVG");
    }

    // PNG: decodes, the figure's size, white background, the blue series and red watermark.
    let png_path = dir.path().join("t.png");
    let (ok, _, err) = vcramctl(&[
        "plot",
        csv.to_str().unwrap(),
        "-o",
        png_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (w, h, px) = png_pixels(&png_path);
    assert_eq!((w, h), (1200, 1100));
    let count = |c: [u8; 3]| px.iter().filter(|p| **p == c).count();
    assert!(count([255, 255, 255]) > px.len() / 2, "mostly white");
    assert!(count([0, 0, 255]) > 500, "the blue series is drawn");
    assert!(count([120, 0, 200]) > 200, "the ratio is drawn");
    assert!(
        count([255, 0, 0]) > 200,
        "the red watermark/pressure is drawn"
    );
    assert!(count([0, 255, 0]) > 200, "the green discards are drawn");
}

#[test]
fn record_and_plot_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (ok, _, err) = vcramctl(&["plot", &p("missing.csv"), "-o", &p("x.png")]);
    assert!(!ok);
    assert!(err.contains("missing.csv"), "{err}");
    std::fs::write(p("empty.csv"), "seq,unix_ms\n").unwrap();
    let (ok, _, err) = vcramctl(&["plot", &p("empty.csv"), "-o", &p("x.png")]);
    assert!(!ok);
    assert!(err.contains("no samples"), "{err}");
    std::fs::write(p("bad.csv"), "seq,unix_ms\nx,y\n").unwrap();
    let (ok, _, err) = vcramctl(&["plot", &p("bad.csv"), "-o", &p("x.png")]);
    assert!(!ok);
    assert!(err.contains("row 2"), "{err}");
    std::fs::write(p("one.csv"), "seq,unix_ms,ratio\n1,1000,2.0\n").unwrap();
    let (ok, _, err) = vcramctl(&["plot", &p("one.csv"), "-o", &p("x.jpg")]);
    assert!(!ok);
    assert!(err.contains(".png or .svg"), "{err}");
    let (ok, _, err) = vcramctl(&[
        "--socket",
        "/nonexistent/vcram.ctl",
        "record",
        "--seconds",
        "1",
        "-o",
        &p("r.csv"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("cannot talk to /nonexistent/vcram.ctl"),
        "{err}"
    );
    let (ok, _, err) = vcramctl(&[
        "--socket",
        "/x",
        "record",
        "--seconds",
        "0",
        "-o",
        &p("r.csv"),
    ]);
    assert!(!ok);
    assert!(err.contains("positive"), "{err}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(url: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        ctype,
        r.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn metrics_over_http() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&["--metrics-listen", &addr]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    traffic(&mut c, &g, 8, 8, 3);

    let (status, ctype, body) = get(&format!("http://{addr}/metrics"));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    for needle in [
        "# TYPE vcram_stored_pages gauge\nvcram_stored_pages 8\n",
        "# TYPE vcram_commit_pages_total counter\nvcram_commit_pages_total 8\n",
        "vcram_discard_pages_total 3\n",
        "vcram_rejects_total{key=\"unsupported\"} 1\n",
        "vcram_connected 1\n",
    ] {
        assert!(body.contains(needle), "no {needle:?} in\n{body}");
    }
    // Every field of the snapshot is there: numbers as metrics, text as labels of vcram_info.
    let json: serde_json::Value = serde_json::from_str(&d.ctl("stats")).unwrap();
    for (field, v) in json.as_object().unwrap() {
        if v.is_string() {
            assert!(
                body.contains(&format!("{field}=\"")),
                "no label {field} in\n{body}"
            );
        } else {
            let found = body.lines().any(|l| {
                l.strip_prefix("vcram_")
                    .is_some_and(|rest| rest.starts_with(field.as_str()) && !l.starts_with('#'))
            });
            assert!(found, "no metric for {field} in\n{body}");
        }
    }
    // Every sample line is NAME[{labels}] VALUE with a number.
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{l}");
    }
    let (status, _, _) = get(&format!("http://{addr}/nothing"));
    assert_eq!(status, 404);
}

#[test]
fn metrics_port_in_use_is_an_error() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(device_bin())
        .args(["--socket"])
        .arg(dir.path().join("v.sock"))
        .args(["--window-base", "4G", "--metrics-listen", &addr])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("--metrics-listen {addr}")), "{err}");
    assert!(err.contains("in use"), "{err}");
    let o = Command::new(device_bin())
        .args([
            "--socket",
            "/tmp/x.sock",
            "--window-base",
            "4G",
            "--metrics-listen",
            "nohost",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--metrics-listen"));
}

/// More samples than one control-socket reply carries: `record --history` pages through them
/// and writes every one, in order, without a gap.
#[test]
fn record_pages_through_a_long_timeline() {
    let d = Daemon::start(&["--timeline-interval-ms", "10", "--timeline-samples", "5000"]);
    let want = vcram_device::timeline::MAX_PER_REPLY + 200;
    // The ring holds `want` samples once one follows sample want - 1.
    let t0 = Instant::now();
    while serde_json::from_str::<Reply>(&d.ctl(&format!("timeline {}", want - 1)))
        .unwrap()
        .samples
        .is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the ring does not fill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first: Reply = serde_json::from_str(&d.ctl("timeline 0")).unwrap();
    assert!(first.more, "one reply should not hold them all");
    assert_eq!(first.samples.len(), vcram_device::timeline::MAX_PER_REPLY);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("long.csv");
    let (ok, _, err) = vcramctl(&[
        "--socket",
        d.control.to_str().unwrap(),
        "record",
        "--history",
        "--seconds",
        "0.05",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let rows: Vec<Sample> = csv::Reader::from_path(&csv)
        .unwrap()
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(rows.len() >= want, "{} rows", rows.len());
    assert_eq!(rows[0].seq, 1);
    assert!(rows.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}
