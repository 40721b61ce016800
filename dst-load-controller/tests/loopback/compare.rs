//! `compare` and `--html` through the binary, on reports of real runs
//! against our mock: the same seeded run compares `same`, a slower mock
//! compares `worse` by the delay added, bad reports exit 2, and the pages
//! render in headless Chromium.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dst-compare-{}-{name}", std::process::id()))
}

/// A short seeded run on the mock with `delay` on every update; writes its
/// report and pictures.
fn run(delay: &str, seed: &str, report: &Path, html: &Path) {
    // The default gates would judge the delay; these runs are measured.
    let out = crate::support::short_run(seed, "1500ms", "7s")
        .args(["--mock-delay", delay, "--admin-addr", "127.0.0.1:0"])
        .arg("--report")
        .arg(report)
        .arg("--html")
        .arg(html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compare(args: &[&Path], extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("compare")
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

/// The rows of `compare --report`.
fn rows(path: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["rows"].as_array().unwrap().clone()
}

#[test]
fn same_runs_compare_same_a_slower_mock_compares_worse_and_pages_render() {
    let (a, b, slow) = (temp("a.json"), temp("b.json"), temp("slow.json"));
    let (ha, hb, hslow) = (temp("a.html"), temp("b.html"), temp("slow.html"));
    // Latencies dominated by the mock's delay, so that a loaded machine's
    // noise (milliseconds) stays far below the 10% threshold.
    run("400ms", "3", &a, &ha);
    run("400ms", "3", &b, &hb);
    run("800ms", "3", &slow, &hslow);

    // The same seeded scenario against the same mock: nothing differs.
    let same = temp("same.json");
    let out = compare(&[&a, &b], &["--report", same.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("verdict: nothing worse"), "{stdout}");
    let r = rows(&same);
    let tested: Vec<_> = r.iter().filter(|r| r["counted"] == true).collect();
    assert!(
        tested.iter().all(|r| r["verdict"] == "same"),
        "{}",
        serde_json::to_string_pretty(&r).unwrap()
    );
    // update, convergence and fan-out at p50..p999 were tested, and the 5
    // counts (profile_stale_streams among them).
    assert_eq!(tested.len(), 3 * 4 + 5, "{stdout}");

    // 400 ms more on every update: worse, by about 400 ms (+100%).
    let worse = temp("worse.json");
    let junit = temp("worse.xml");
    let out = compare(
        &[&a, &slow],
        &[
            "--report",
            worse.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--html",
            temp("compare.html").to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    let r = rows(&worse);
    let p50 = r
        .iter()
        .find(|r| r["metric"] == "update_latency.p50")
        .unwrap();
    assert_eq!(p50["verdict"], "worse", "{p50}");
    let delta = p50["new"].as_f64().unwrap() - p50["base"].as_f64().unwrap();
    assert!((0.3..0.6).contains(&delta), "p50 moved by {delta} s: {p50}");
    let (lo, hi) = (
        p50["interval"][0].as_f64().unwrap(),
        p50["interval"][1].as_f64().unwrap(),
    );
    assert!(
        lo > 0.5 && hi < 1.5,
        "interval {lo}..{hi} of a doubled latency"
    );
    // Counts did not change.
    for count in ["errors", "resets", "stale_streams", "unconverged_streams"] {
        let row = r.iter().find(|r| r["metric"] == count).unwrap();
        assert_eq!(row["verdict"], "same", "{row}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuite name=\"compare\""), "{xml}");
    assert!(!xml.contains("failures=\"0\""), "{xml}");

    // Swapped, the runs compare better, and `--report -` puts the JSON
    // alone on standard output (the table goes to standard error): the same
    // rows as a file would hold, with every worse verdict turned better.
    let out = compare(&[&slow, &a], &["--report", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("verdict: better ("), "{stderr}");
    assert!(stderr.contains("none worse)"), "{stderr}");
    let swapped: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let swapped = swapped["rows"].as_array().unwrap();
    assert_eq!(swapped.len(), r.len());
    for (s, w) in swapped.iter().zip(&r) {
        assert_eq!(s["metric"], w["metric"]);
        let flipped = match w["verdict"].as_str().unwrap() {
            "worse" => "better",
            "better" => "worse",
            v => v,
        };
        // Intervals are bootstrapped: a row near the threshold may land on
        // `same` one way and not the other; a swap never turns worse into
        // worse.
        if w["counted"] == true && w["verdict"] == "worse" {
            assert_ne!(s["verdict"], "worse", "{s} against {w}");
        }
        if s["verdict"] != "same" && w["verdict"] != "same" {
            assert_eq!(s["verdict"], flipped, "{s} against {w}");
        }
    }
    // Two files on one standard output: refused before anything is read.
    let out = compare(&[&slow, &a], &["--report", "-", "--junit", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--report and --junit are all `-`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pictures, as a person sees them.
    for page in [&ha, &hslow, &temp("compare.html")] {
        render_in_chromium(page);
    }
    // The check sees a chart that draws nothing: the same page with its
    // charts emptied leaves white stretches.
    let blanked = temp("blanked.html");
    let html = std::fs::read_to_string(&ha).unwrap();
    let mut emptied = String::new();
    for (i, part) in html.split("<svg").enumerate() {
        match (i, part.split_once("</svg>")) {
            (0, _) | (_, None) => emptied += part,
            (_, Some((_, after))) => {
                emptied += "<svg width=\"760\" height=\"300\"></svg>";
                emptied += after;
            }
        }
    }
    std::fs::write(&blanked, emptied).unwrap();
    let shot = screenshot(&blanked);
    let (top, bottom) = shot.inked_rows(0..SHOT_WIDTH).unwrap();
    let gap = shot.longest_blank_run(0..SHOT_WIDTH / 2, top..bottom);
    assert!(
        gap >= 150,
        "emptied charts left no blank stretch ({gap} px)"
    );
    std::fs::remove_file(&blanked).unwrap();
    for f in [
        a,
        b,
        slow,
        ha,
        hb,
        hslow,
        same,
        worse,
        junit,
        temp("compare.html"),
    ] {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn bad_and_mismatched_reports_exit_2_and_name_the_problem() {
    let dir = temp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = |scenario: &str, seed: u64| {
        format!(
            "{{\"scenario\": \"{scenario}\", \"seed\": {seed}, \"streams\": 1, \"errors\": 0, \
             \"update_latency\": {{\"count\": 1, \"p50\": 0.01, \"p95\": 0.01, \"p99\": 0.01, \"p999\": 0.01, \"max\": 0.01}}}}"
        )
    };
    let base = write("base.json", &good("baseline", 1));
    let one_sample = {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        h.record(10_000).unwrap();
        serde_json::to_string(&dst_load_controller::latency::HdrBlob(h)).unwrap()
    };
    let cases = [
        (
            write("cut.json", "{\"streams\": 1, \"err"),
            "is not a JSON report (line 1",
        ),
        (
            write("other.json", "{\"kind\": \"Pod\"}"),
            "is not a report of `run --report`",
        ),
        (
            write("seed.json", &good("baseline", 2)),
            "different seeds (1 and 2)",
        ),
        (
            write("scn.json", &good("red-line", 1)),
            "different scenarios",
        ),
        // Damaged figures (they used to be compared: "better", "-1000.0 ms").
        (
            write(
                "neg.json",
                &good("baseline", 1).replace("\"p50\": 0.01", "\"p50\": -1"),
            ),
            "is a damaged report: update_latency: p50 is -1 s: a latency is from 0 to 86400 s",
        ),
        (
            write(
                "huge.json",
                &good("baseline", 1).replace("\"p50\": 0.01", "\"p50\": 1e308"),
            ),
            "update_latency: p50 is 1e308 s",
        ),
        (
            write(
                "hollow.json",
                &good("baseline", 1).replace(
                    "\"count\": 1,",
                    &format!("\"count\": 100, \"histogram\": {one_sample},"),
                ),
            ),
            "update_latency: a count of 100 with a histogram of 1 samples",
        ),
    ];
    for (path, want) in &cases {
        let out = compare(&[&base, path], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(want),
            "{}: no '{want}' in {stderr}",
            path.display()
        );
    }
    let out = compare(&[&base, &dir.join("missing.json")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the report"));
    // Told to, compare compares different seeds (numbers only: no histograms).
    let out = compare(&[&base, &cases[2].0], &["--allow-different"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no histogram in a report"));
    let out = compare(&[&base, &base], &["--threshold", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `run --repeat N` of a short seeded plan on the mock, every update
/// delayed by `delay`; returns the report.
fn repeated(delay: &str, runs: &str, report: &Path) -> serde_json::Value {
    let out = crate::support::short_run("3", "500ms", "2s")
        .args(["--mock-delay", delay, "--admin-addr", "127.0.0.1:0"])
        .args(["--repeat", runs])
        .arg("--report")
        .arg(report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("run {runs} of {runs}")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("over {runs} runs")), "{stdout}");
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

/// `run --repeat` writes every run's figures; `compare` of two such reports
/// tests each figure over the runs: runs of one plan compare `same`, a mock
/// twice as slow `worse` (exit 4), and fewer runs than the test needs say
/// `too few runs` instead of a verdict.
#[test]
fn repeated_runs_are_judged_over_runs_and_too_few_runs_say_so() {
    let (base, again, slow, two) = (
        temp("rep-base.json"),
        temp("rep-again.json"),
        temp("rep-slow.json"),
        temp("rep-two.json"),
    );
    // Latencies of 50 ms and more, so that a loaded machine's noise (a few
    // ms) stays within the 10% threshold.
    let report = repeated("50ms", "4", &base);
    let runs = report["repeats"].as_array().expect("repeats");
    assert_eq!(runs.len(), 4, "{report:#}");
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r["run"], i + 1);
        assert_eq!(r["passed"], true);
        let p50 = r["figures"]["update_latency.p50"].as_f64().unwrap();
        assert!((0.05..0.2).contains(&p50), "run {}: {p50}", i + 1);
        assert_eq!(r["figures"]["errors"], 0.0);
    }
    // The first run is the report's own figures; one seed for all.
    assert_eq!(
        runs[0]["figures"]["update_latency.p50"],
        report["update_latency"]["p50"]
    );
    assert_eq!(report["seed"], "3");
    repeated("50ms", "4", &again);
    repeated("100ms", "4", &slow);
    repeated("50ms", "2", &two);

    let json = |out: &Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };
    let row = |v: &serde_json::Value, metric: &str| -> serde_json::Value {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} in {v:#}"))
            .clone()
    };
    let out = compare(&[&base, &again], &["--report", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("mode: runs (4 and 4)"), "{stderr}");
    let same = json(&out);
    assert_eq!(same["mode"], "runs");
    for r in same["rows"].as_array().unwrap() {
        assert_eq!(r["verdict"], "same", "{r}");
        assert_eq!(r["runs"], serde_json::json!([4, 4]));
    }

    let out = compare(&[&base, &slow], &["--report", "-"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worse = json(&out);
    let p50 = row(&worse, "update_latency.p50");
    assert_eq!(p50["verdict"], "worse", "{p50}");
    // Every slow run above every base run: 2 of C(8,4) arrangements.
    assert!(
        (p50["p_value"].as_f64().unwrap() - 2.0 / 70.0).abs() < 1e-9,
        "{p50}"
    );
    let change = p50["change"].as_f64().unwrap();
    assert!((0.6..1.4).contains(&change), "{p50}");
    assert_eq!(row(&worse, "errors")["verdict"], "same");

    // Two runs a side, or a single run against runs: too few, exit 0.
    for pair in [[&two, &two], [&base, &two], [&slow, &two]] {
        let pair = pair.map(PathBuf::as_path);
        let out = compare(&pair, &["--report", "-"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains("which needs 4 a side (`run --repeat 4`)"),
            "{stderr}"
        );
        assert!(stderr.contains("verdict: too few runs"), "{stderr}");
        let v = json(&out);
        assert!(
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["verdict"] == "too few runs"),
            "{v:#}"
        );
    }
    // Single runs keep today's mode, and say what it cannot see.
    let (a, b) = (temp("rep-single-a.json"), temp("rep-single-b.json"));
    for f in [&a, &b] {
        let mut v =
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&base).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("repeats");
        std::fs::write(f, v.to_string()).unwrap();
    }
    let out = compare(&[&a, &b], &["--report", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mode: one run a side: a bootstrap"),
        "{stderr}"
    );
    assert_eq!(json(&out)["mode"], "single run");
    for f in [base, again, slow, two, a, b] {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn repeat_counts_out_of_range_are_usage_errors() {
    for (args, expect) in [
        (&["run", "--repeat", "0"][..], "--repeat"),
        (&["run", "--repeat", "31"][..], "--repeat"),
    ] {
        crate::support::usage_error(args, expect);
    }
}

/// Loads `page` in headless Chromium: a screenshot of the whole page that
/// is not blank anywhere charts should be, a DOM with SVG charts whose lines
/// have points, no console error.
fn render_in_chromium(page: &Path) {
    render_in_chromium_min(page, 6);
}

/// The screenshot's height: taller than any page drawn, so that it holds
/// the whole page.
const SHOT_HEIGHT: usize = 8000;
const SHOT_WIDTH: usize = 1600;

/// Headless Chromium's command.
fn chromium() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect(
            "headless Chromium is needed (Debian: apt-get install chromium; .ci/run installs it)",
        )
}

/// Chromium's flags for a page as a person's window shows it.
fn chromium_flags(page: &Path) -> Vec<String> {
    let profile = page.with_extension("profile");
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        &format!("--window-size={SHOT_WIDTH},{SHOT_HEIGHT}"),
        "--enable-logging=stderr",
        "--v=0",
        &format!("--user-data-dir={}", profile.display()),
    ]
    .map(str::to_string)
    .to_vec()
}

/// A screenshot of `page` (its console quiet).
fn screenshot(page: &Path) -> Screenshot {
    let shot = page.with_extension("png");
    let out = Command::new(chromium())
        .args(chromium_flags(page))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains(":CONSOLE("), "console messages: {log}");
    let picture = Screenshot::read(&shot);
    std::fs::remove_file(&shot).unwrap();
    let _ = std::fs::remove_dir_all(page.with_extension("profile"));
    picture
}

/// [`render_in_chromium`] of a page with at least `charts` charts.
fn render_in_chromium_min(page: &Path, charts: usize) {
    let picture = screenshot(page);
    let dom = Command::new(chromium())
        .args(chromium_flags(page))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let svgs = dom.matches("<svg").count();
    assert!(svgs >= charts, "{svgs} charts in {}", page.display());
    // Every line drawn has points.
    let lines: Vec<&str> = dom
        .split("<polyline")
        .skip(1)
        .filter_map(|l| l.split("points=\"").nth(1)?.split('"').next())
        .collect();
    assert!(lines.len() >= svgs, "{} lines", lines.len());
    assert!(lines.iter().all(|p| p.trim().split(' ').count() >= 2));
    // The size asked for, and the page inside it (nothing cut off).
    assert_eq!((picture.width, picture.height), (SHOT_WIDTH, SHOT_HEIGHT));
    let (top, bottom) = picture
        .inked_rows(0..SHOT_WIDTH)
        .expect("a blank screenshot");
    assert!(
        bottom < SHOT_HEIGHT - 40,
        "the page runs past the screenshot ({bottom} px)"
    );
    // Charts (300 px, two to a row at most) fill the page's height.
    assert!(
        bottom - top >= svgs.div_ceil(2) * 240,
        "{svgs} charts drawn in {} px",
        bottom - top
    );
    // Not blank where charts are: every chart row has a chart on the left,
    // so no stretch of the left half between the first and the last ink is
    // white for longer than the gap between two rows.
    let gap = picture.longest_blank_run(0..SHOT_WIDTH / 2, top..bottom);
    assert!(gap < 150, "a blank stretch of {gap} px on the page's left");
    // Many colours: lines, text and grids, not a flat fill.
    assert!(
        picture.colours() > 20,
        "a flat screenshot: {} colours",
        picture.colours()
    );
    let _ = std::fs::remove_dir_all(page.with_extension("profile"));
}

/// A screenshot's pixels.
struct Screenshot {
    width: usize,
    height: usize,
    /// RGB(A) samples, `px` bytes per pixel.
    bytes: Vec<u8>,
    px: usize,
}

impl Screenshot {
    fn read(path: &Path) -> Self {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        Self {
            width: info.width as usize,
            height: info.height as usize,
            px: info.color_type.samples(),
            bytes: buf,
        }
    }

    fn inked(&self, x: usize, y: usize) -> bool {
        let i = (y * self.width + x) * self.px;
        self.bytes[i..i + 3] != [255, 255, 255]
    }

    fn row_inked(&self, xs: std::ops::Range<usize>, y: usize) -> bool {
        xs.into_iter().any(|x| self.inked(x, y))
    }

    /// The first and last rows with ink within columns `xs`.
    fn inked_rows(&self, xs: std::ops::Range<usize>) -> Option<(usize, usize)> {
        let top = (0..self.height).find(|y| self.row_inked(xs.clone(), *y))?;
        let bottom = (0..self.height)
            .rev()
            .find(|y| self.row_inked(xs.clone(), *y))?;
        Some((top, bottom))
    }

    /// The most consecutive rows of `ys` without ink in columns `xs`.
    fn longest_blank_run(&self, xs: std::ops::Range<usize>, ys: std::ops::Range<usize>) -> usize {
        let (mut run, mut longest) = (0, 0);
        for y in ys {
            if self.row_inked(xs.clone(), y) {
                run = 0;
            } else {
                run += 1;
                longest = longest.max(run);
            }
        }
        longest
    }

    fn colours(&self) -> usize {
        let set: std::collections::HashSet<&[u8]> = self.bytes.chunks(self.px).collect();
        set.len()
    }
}

/// Runs `run --find-red-line` on the mock with `args` and `--report
/// report` (plus `--html html` if given); asserts exit 0. Its standard
/// output and the report's `find_red_line`.
/// The load both red-line searches grow: one service of 2-6 endpoints on
/// 2 s holds (longer than the largest delay either tries: 64 x 20 ms and
/// 20 x 50 ms), gated on the update latency's p95.
const ONE_SERVICE: [&str; 16] = [
    "--services",
    "1",
    "--min-endpoints",
    "2",
    "--max-endpoints",
    "6",
    "--min-hold",
    "2s",
    "--max-hold",
    "2s",
    "--jitter",
    "0s",
    "--settle",
    "10s",
    "--slo",
    "update_latency.p95<1s",
];

fn red_line_search(
    args: &[&str],
    report: &Path,
    html: Option<&Path>,
) -> (String, serde_json::Value) {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--find-red-line"])
        .args(ONE_SERVICE)
        .args(args)
        .args(["--admin-addr", "127.0.0.1:0", "--report"])
        .arg(report);
    if let Some(html) = html {
        cmd.arg("--html").arg(html);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    (stdout, r["find_red_line"].clone())
}

/// `run --find-red-line` against a mock whose every update waits 20 ms per
/// open stream: with `update_latency.p95<1s` the true red line is 49
/// streams (50 x 20 ms = 1 s). The finder must land within its 10%, never
/// above the true line; a loaded machine adds latency to every step (seen:
/// 48 streams at p95 1,022 ms under two busy loops), which can only lower
/// the line found, so the bound below it is wider.
#[test]
fn the_red_line_finder_lands_within_its_precision_on_a_known_red_line() {
    let (report, html) = (temp("red-line.json"), temp("red-line.html"));
    let (stdout, found) = red_line_search(
        &[
            "--red-line-precision",
            "10%",
            "--streams-per-service",
            "8",
            "--duration",
            "4s",
            "--seed",
            "2",
            "--mock-delay-per-stream",
            "20ms",
            "--min-samples",
            "8",
        ],
        &report,
        Some(&html),
    );
    let (pass, fail) = (
        found["search"]["pass"].as_u64().unwrap(),
        found["search"]["fail"].as_u64().unwrap(),
    );
    assert!(
        (40..=49).contains(&pass) && (44..=55).contains(&fail) && fail > pass,
        "held {pass}, failed {fail}: {stdout}"
    );
    assert!(stdout.contains(&format!("red line: {pass} streams per service held")));
    // Doubling from 8 until a fail, then bisecting: never the same load twice.
    let steps: Vec<u64> = found["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["load"].as_u64().unwrap())
        .collect();
    assert_eq!(&steps[..4], [8, 16, 32, 64], "{steps:?}");
    let mut unique = steps.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), steps.len(), "{steps:?}");
    // Each step's own run is in the report, with its verdicts; none
    // client-bound at these loads.
    for s in found["steps"].as_array().unwrap() {
        assert_eq!(s["client_bound"], false, "{s}");
        assert_eq!(
            s["outcome"]["plan"]["clients"]["streams-per-service"],
            s["load"]
        );
        assert!(s["outcome"]["slos"].as_array().unwrap().len() >= 2);
    }
    render_in_chromium_min(&html, 1);
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_file(&html).unwrap();
}

/// `run --find-red-line --repeat 3` on a mock whose updates wait 50 ms per
/// open stream, gated on `update_latency.p95<1s`: the true red line is 19
/// streams (20 x 50 ms = 1 s). Doubling from 5 streams: 5 and 10 hold, 20
/// can never hold (every update waits 1 s or more), the bisection's 15
/// holds (750 ms, wide of the bound for a loaded machine), and at 50%
/// precision the search stops there. Every step runs three times with one
/// seed and holds when more than half its runs held; the report has each
/// run's figures.
#[test]
fn a_repeated_red_line_search_runs_every_step_three_times_with_one_seed() {
    let report = temp("red-line-repeat.json");
    let (stdout, found) = red_line_search(
        &[
            "--red-line-precision",
            "50%",
            "--repeat",
            "3",
            "--red-line-max",
            "40",
            "--streams-per-service",
            "5",
            "--duration",
            "3s",
            "--mock-delay-per-stream",
            "50ms",
            "--min-samples",
            "4",
        ],
        &report,
        None,
    );
    assert_eq!(found["search"]["pass"], 15, "{stdout}");
    assert_eq!(found["search"]["fail"], 20, "{stdout}");
    assert!(stdout.contains("red line: 15 streams per service held, 20 failed"));
    let steps = found["steps"].as_array().unwrap();
    let loads: Vec<u64> = steps.iter().map(|s| s["load"].as_u64().unwrap()).collect();
    assert_eq!(loads, [5, 10, 20, 15], "{stdout}");
    let mut seeds = std::collections::BTreeSet::new();
    for s in steps {
        assert_eq!(s["runs"], 3, "{s}");
        let runs = s["outcome"]["repeats"].as_array().unwrap();
        assert_eq!(runs.len(), 3, "{s}");
        let held = runs.iter().filter(|r| r["passed"] == true).count();
        assert_eq!(s["runs_held"], held, "{s}");
        assert_eq!(s["passed"], 2 * held > 3, "{s}");
        // The run shown is one whose verdict is the step's.
        let shown = s["outcome"]["slos"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["pass"] == true);
        assert_eq!(s["passed"], shown, "{s}");
        // Each run of the step measured the step's load.
        for run in runs {
            assert!(run["figures"]["update_latency.p95"].as_f64().unwrap() > 0.0);
        }
        seeds.insert(s["outcome"]["seed"].as_str().unwrap().to_string());
    }
    // 20 streams: every update waits 1 s or more, so no run can hold.
    assert_eq!(steps[2]["runs_held"], 0, "{stdout}");
    assert_eq!(seeds.len(), 1, "one seed for every step: {seeds:?}");
    assert!(stdout.contains("of 3 runs held"), "{stdout}");
    std::fs::remove_file(&report).unwrap();
}
