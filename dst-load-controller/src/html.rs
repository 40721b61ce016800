//! Pictures of a run, or of two compared: one self-contained HTML page of
//! SVG charts drawn with plotters (no script, no network, no font files).
//! Pure: builds strings from reports.
//!
//! How the charts read: latencies on log axes in milliseconds with a tick
//! at every 1, 2 and 5 times a power of ten; counts on integer ticks; time
//! in seconds since the run's start. Legends sit under their chart, never
//! on its data. A figure that is zero all along is one line of text, not a
//! flat chart. On a comparison, charts of the same figure share their scales.

use plotters::{
    coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged},
    prelude::*,
};

use crate::{
    latency::Percentiles,
    measurements::{ChangeRecord, Measurements, TimelineSample},
    verdicts::{Row, Verdict},
};

/// Why a chart was not drawn (shown in its place).
type DrawError = DrawingAreaErrorKind<std::io::Error>;

/// One run as drawn: a label, its measurements and what it was (version,
/// plan, seed, target...).
pub struct Run<'a> {
    label: String,
    m: &'a Measurements,
    meta: Vec<(String, String)>,
}

impl<'a> Run<'a> {
    /// `label` names the run in legends.
    pub fn new(label: &str, m: &'a Measurements) -> Self {
        Self {
            label: label.to_string(),
            m,
            meta: Vec::new(),
        }
    }

    /// Adds `key: value` to the run's description (skipped when `value` is
    /// empty). A value of several lines (a plan) is shown folded.
    pub fn meta(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let value = value.to_string();
        if !value.is_empty() {
            self.meta.push((key.to_string(), value));
        }
        self
    }

    /// The run's start: its first sample or change (seconds since the epoch).
    fn start(&self) -> f64 {
        let first_sample = self.m.timeline.first().map(|s| s.at);
        let first_change = self.m.fanouts.iter().map(|c| c.at).min_by(f64::total_cmp);
        [first_sample, first_change]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
            .unwrap_or(0.0)
    }

    /// Seconds from the start to the last sample or change.
    fn span(&self) -> f64 {
        let start = self.start();
        let last_sample = self.m.timeline.last().map(|s| s.at);
        let last_change = self.m.fanouts.iter().map(|c| c.at).max_by(f64::total_cmp);
        [last_sample, last_change]
            .into_iter()
            .flatten()
            .map(|t| t - start)
            .fold(0.0, f64::max)
    }
}

const W: u32 = 760;
const H: u32 = 300;
/// A service's charts: lower, two to a row.
const H_SMALL: u32 = 240;
const BLUE: RGBColor = RGBColor(31, 119, 180);
const RED: RGBColor = RGBColor(214, 39, 40);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(127, 127, 127);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
/// A line: its legend, its colour and its points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);
/// The runs' colours, base then new.
const RUNS: [RGBColor; 2] = [BLUE, RED];
/// The services drawn one by one, worst first (every one is in the table).
const SERVICES_DRAWN: usize = 4;
/// The services listed in the table, worst first.
const SERVICES_LISTED: usize = 25;

/// The page of one run (`run --html`, `client --html`, `report --html`).
pub fn run_page(title: &str, run: &Run, slos: &[crate::slo::Verdict]) -> String {
    let mut body = meta_table(&[run]);
    body += &slo_table(slos);
    body += &percentile_table(run.m);
    let scale = TimeScale::of(&[run]);
    body += &section(
        "Update latency over time (each second's p50, p95 and p99)",
        &latency_over_time(run, &scale),
    );
    body += &section("Latency distributions", &cdfs(&[run]));
    body += &section("Changes and their fan-out", &fanout_timeline(run, &scale));
    body += &services(run, &scale);
    body += &timelines(&[run], &scale, "Streams over time");
    page(title, &body)
}

/// The page of a comparison (`compare --html`): verdicts, then both runs,
/// overlaid where they can be and on shared scales where they are apart.
pub fn compare_page(base: &Run, new: &Run, rows: &[Row]) -> String {
    let runs = [base, new];
    let mut body = meta_table(&runs);
    body += &verdict_table(rows);
    let scale = TimeScale::of(&runs);
    body += &section(
        "Update latency over time (each second's p50, p95 and p99), on one scale",
        &(latency_over_time(base, &scale) + &latency_over_time(new, &scale)),
    );
    body += &section("Latency distributions (base and new)", &cdfs(&runs));
    body += &section(
        "Changes and their fan-out, on one scale",
        &(fanout_timeline(base, &scale) + &fanout_timeline(new, &scale)),
    );
    body += &timelines(&runs, &scale, "Streams over time (base and new)");
    page(&format!("compare {} -> {}", base.label, new.label), &body)
}

/// The scales charts of one page share: time since each run's start, and
/// the latencies (milliseconds) of every run drawn.
struct TimeScale {
    /// Seconds, the longest run's span.
    x_hi: f64,
    /// Milliseconds: the fan-out and over-time charts' log range.
    ms: (f64, f64),
}

impl TimeScale {
    fn of(runs: &[&Run]) -> Self {
        let x_hi = runs.iter().map(|r| r.span()).fold(1.0, f64::max) * 1.02;
        let seconds = runs.iter().flat_map(|r| {
            let windows = r.m.timeline.iter().filter_map(|s| s.update_latency);
            let changes = r.m.fanouts.iter();
            windows.flat_map(|w| [w.p50, w.p95, w.p99]).chain(
                changes.flat_map(|c| [c.first_converged, c.last_converged].into_iter().flatten()),
            )
        });
        Self {
            x_hi,
            ms: ms_range(seconds),
        }
    }
}

/// A log range (milliseconds) around `seconds`: from the least to the most,
/// widened to at least 5x (so that 1-2-5 ticks show), with room at both ends.
fn ms_range(seconds: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = seconds
        .filter(|s| s.is_finite())
        .map(|s| (s * 1e3).max(MS_FLOOR))
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if hi == 0.0 {
        return (1.0, 1000.0);
    }
    let (lo, hi) = (lo / 1.25, hi * 1.25);
    if hi < lo * 5.0 {
        let mid = (lo * hi).sqrt();
        (mid / 5f64.sqrt(), mid * 5f64.sqrt())
    } else {
        (lo, hi)
    }
}

/// The least latency drawn on a log axis: 1 µs.
const MS_FLOOR: f64 = 1e-3;

/// An axis (linear or log) with the ticks given, and no minor grid lines.
struct Ticked<R> {
    inner: R,
    ticks: Vec<f64>,
}

fn ticked<A: AsRangedCoord<Value = f64>>(axis: A, ticks: Vec<f64>) -> Ticked<A::CoordDescType> {
    Ticked {
        inner: axis.into(),
        ticks,
    }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> std::ops::Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

/// One axis of a chart: its range with its ticks, its name, how a tick reads.
struct Axis<R> {
    range: Ticked<R>,
    name: String,
    tick: fn(&f64) -> String,
}

fn axis<A: AsRangedCoord<Value = f64>>(
    range: A,
    ticks: Vec<f64>,
    name: impl Into<String>,
    tick: fn(&f64) -> String,
) -> Axis<A::CoordDescType> {
    Axis {
        range: ticked(range, ticks),
        name: name.into(),
        tick,
    }
}

/// A chart of the page: two [`Ticked`] axes on an SVG backend.
type Chart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked<X>, Ticked<Y>>>;

/// A chart on `root`: its caption (`caption_size` px) and both axes drawn,
/// every chart of the page alike; the caller draws the data.
fn frame<'a, 'b, X, Y>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: impl AsRef<str>,
    caption_size: u32,
    x: Axis<X>,
    y: Axis<Y>,
) -> Result<Chart<'a, 'b, X, Y>, DrawError>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(caption.as_ref(), ("sans-serif", caption_size))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x.range, y.range)?;
    chart
        .configure_mesh()
        .x_desc(x.name)
        .y_desc(y.name)
        .x_label_formatter(&x.tick)
        .y_label_formatter(&y.tick)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .draw()?;
    Ok(chart)
}

/// A fraction's tick: a whole percentage.
fn percent_tick(v: &f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// Ticks of a log axis: every 1, 2 and 5 times a power of ten in `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut exp = lo.log10().floor() as i32;
    while 10f64.powi(exp) <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(exp);
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
        exp += 1;
    }
    ticks
}

/// Ticks of a linear axis from 0 to `hi`: whole multiples of 1, 2 or 5 times
/// a power of ten (never a fraction), at most 8 of them.
fn linear_ticks(hi: f64) -> Vec<f64> {
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let s = step * m;
            if hi / s <= 8.0 {
                let n = (hi / s).floor() as u64;
                return (0..=n).map(|i| i as f64 * s).collect();
            }
        }
        step *= 10.0;
    }
}

/// A tick of a milliseconds axis: `0.5`, `2`, `1000` (no float noise).
fn ms_tick(v: &f64) -> String {
    let rounded = (v * 1e3).round() / 1e3;
    format!("{rounded}")
}

/// A count's tick: an integer.
fn count_tick(v: &f64) -> String {
    format!("{v:.0}")
}

/// A duration as a person reads it: milliseconds below a second.
fn duration(s: f64) -> String {
    if !s.is_finite() {
        "∞".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

/// The page of a red-line search (`run --find-red-line --html`): each
/// step's latencies against its load, passes and fails marked, and a table.
pub fn red_line_page(scenario: &str, found: &crate::red_line::Found) -> String {
    let pick = |step: &crate::red_line::Step, kind: &str, stat: &str| {
        step.outcome[kind][stat].as_f64().unwrap_or(0.0)
    };
    let mut body = format!("<p>{}</p>\n", esc(&found.verdict()));
    let mut steps: Vec<&crate::red_line::Step> = found.steps.iter().collect();
    steps.sort_by_key(|s| s.load);
    let series = |kind: &'static str, stat: &'static str| -> Vec<(f64, f64)> {
        steps
            .iter()
            .map(|s| (f64::from(s.load), (pick(s, kind, stat) * 1e3).max(MS_FLOOR)))
            .collect()
    };
    let lines = [
        ("update p50", BLUE, series("update_latency", "p50")),
        ("update p99", GREY, series("update_latency", "p99")),
        ("fan-out max", PURPLE, series("fanout_completion", "max")),
    ];
    let marks: Vec<(f64, f64, bool)> = steps
        .iter()
        .map(|s| {
            (
                f64::from(s.load),
                (pick(s, "update_latency", "p99") * 1e3).max(MS_FLOOR),
                s.passed,
            )
        })
        .collect();
    let x_hi = marks.iter().map(|m| m.0).fold(1.0f64, f64::max) * 1.1;
    let (lo, hi) = ms_range(
        lines
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y / 1e3)),
    );
    let chart = svg(W, H, |root| {
        let mut chart = frame(
            root,
            format!("{scenario}: the red line"),
            16,
            axis(
                0f64..x_hi,
                linear_ticks(x_hi),
                match found.dimension {
                    crate::red_line::Dimension::Streams => "streams per service",
                    crate::red_line::Dimension::Services => "services",
                },
                count_tick,
            ),
            axis(
                (lo..hi).log_scale(),
                log_ticks(lo, hi),
                "ms (log scale)",
                ms_tick,
            ),
        )?;
        for (_, color, pts) in &lines {
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        }
        chart.draw_series(marks.iter().map(|(x, y, pass)| {
            let c = if *pass { GREEN } else { RED };
            Circle::new((*x, *y), 5, c.filled())
        }))?;
        Ok(())
    });
    let keys: Vec<(&str, RGBColor)> = lines
        .iter()
        .map(|(l, c, _)| (*l, *c))
        .chain([("held its SLOs", GREEN), ("failed", RED)])
        .collect();
    body += &section(
        "Latency by load (green: the step held its SLOs; red: it failed)",
        &figure(&chart, &keys),
    );
    let mut t = "<h2>Steps, in the order run</h2><table><tr><th>load</th><th>streams</th><th>update p50</th><th>update p99</th><th>fan-out max</th><th>cpu</th><th>verdict</th></tr>\n".to_string();
    for s in &found.steps {
        let d = |kind: &str, stat: &str| duration(pick(s, kind, stat));
        let (class, word) = match (s.passed, s.client_bound) {
            (_, true) => ("fail", "client-bound"),
            (true, _) => ("pass", "PASS"),
            (false, _) => ("fail", "FAIL"),
        };
        t += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td><td class=\"{class}\">{word}</td></tr>\n",
            s.load,
            s.streams,
            d("update_latency", "p50"),
            d("update_latency", "p99"),
            d("fanout_completion", "max"),
            s.cpu * 100.0
        );
    }
    body += &(t + "</table>\n");
    page(&format!("red line of {scenario}"), &body)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222;max-width:1600px}}\
         h1{{font-size:20px}}h2{{font-size:16px;margin-top:28px}}\
         table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}.pass,.better{{color:#2a7d2a}}.fail,.worse{{color:#b22}}\
         table.meta td{{text-align:left;vertical-align:top}}pre{{margin:0;font-size:12px}}\
         .charts{{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}}.empty,.flat{{color:#666;margin:4px 0}}\
         figure{{margin:0}}figcaption{{font-size:12px;padding-left:56px}}\
         .key{{margin-right:14px;white-space:nowrap}}.key i{{display:inline-block;width:18px;height:4px;margin-right:5px;vertical-align:middle}}\
         </style></head><body><h1>{t}</h1>\n{body}</body></html>\n",
        t = esc(title)
    )
}

fn section(title: &str, content: &str) -> String {
    format!(
        "<h2>{}</h2>\n<div class=\"charts\">{content}</div>\n",
        esc(title)
    )
}

/// A chart with its legend under it (so that the legend covers no data).
fn figure(chart: &str, keys: &[(&str, RGBColor)]) -> String {
    let keys: String = keys
        .iter()
        .map(|(label, RGBColor(r, g, b))| {
            format!(
                "<span class=\"key\"><i style=\"background:rgb({r},{g},{b})\"></i>{}</span>",
                esc(label)
            )
        })
        .collect();
    format!("<figure>{chart}<figcaption>{keys}</figcaption></figure>")
}

/// What each run was: version, plan, seed, target, as its caller described it.
fn meta_table(runs: &[&Run]) -> String {
    if runs.iter().all(|r| r.meta.is_empty()) {
        return String::new();
    }
    let mut keys: Vec<&str> = Vec::new();
    for (k, _) in runs.iter().flat_map(|r| &r.meta) {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    let mut t = "<h2>The run</h2><table class=\"meta\">".to_string();
    if runs.len() > 1 {
        t += "<tr><th></th>";
        for r in runs {
            t += &format!("<th>{}</th>", esc(&r.label));
        }
        t += "</tr>\n";
    }
    for key in keys {
        t += &format!("<tr><td>{}</td>", esc(key));
        for r in runs {
            let value = r
                .meta
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str());
            t += &match value {
                Some(v) if v.contains('\n') => {
                    let first = v.lines().next().unwrap_or_default();
                    format!(
                        "<td><details><summary>{} ...</summary><pre>{}</pre></details></td>",
                        esc(first),
                        esc(v)
                    )
                }
                Some(v) => format!("<td>{}</td>", esc(v)),
                None => "<td></td>".into(),
            };
        }
        t += "</tr>\n";
    }
    t + "</table>\n"
}

fn slo_table(slos: &[crate::slo::Verdict]) -> String {
    if slos.is_empty() {
        return "<h2>SLO verdicts</h2><p class=\"empty\">no SLO was judged</p>\n".into();
    }
    let mut t =
        "<h2>SLO verdicts</h2><table><tr><th>SLO</th><th>measured</th><th>verdict</th></tr>\n"
            .to_string();
    for v in slos {
        let (class, word) = if v.pass {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        let measured = match (v.measured, &v.reason) {
            (_, Some(r)) => r.clone(),
            (Some(m), None) if v.samples.is_some() => duration(m),
            (Some(m), None) => format!("{m}"),
            (None, None) => String::new(),
        };
        t += &format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td></tr>\n",
            esc(&v.slo),
            esc(&measured)
        );
    }
    t + "</table>\n"
}

/// Every latency with samples: count and percentiles.
fn percentile_table(m: &Measurements) -> String {
    let rows: Vec<_> = crate::verdicts::latencies(m)
        .into_iter()
        .filter(|(_, p)| p.count > 0)
        .collect();
    if rows.is_empty() {
        return "<h2>Latencies</h2><p class=\"empty\">no latency samples</p>\n".into();
    }
    let mut t = "<h2>Latencies</h2><table><tr><th>latency</th><th>samples</th><th>p50</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n".to_string();
    for (name, p) in rows {
        t += &format!(
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            p.count,
            duration(p.p50),
            duration(p.p95),
            duration(p.p99),
            duration(p.p999),
            duration(p.max)
        );
    }
    t + "</table>\n"
}

fn verdict_table(rows: &[Row]) -> String {
    let mut t = "<h2>Verdicts</h2><table><tr><th>figure</th><th>base</th><th>new</th><th>interval of the change / test over runs</th><th>verdict</th></tr>\n".to_string();
    for r in rows {
        let v = |x: f64| r.show(x);
        let interval = r.evidence();
        let class = match r.verdict {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Same | Verdict::TooFewRuns => "same",
        };
        let note = r.note.map_or(String::new(), |n| format!(" ({n})"));
        t += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{interval}</td><td class=\"{class}\">{}{}</td></tr>\n",
            esc(&r.metric),
            v(r.base),
            v(r.new),
            r.verdict.as_str(),
            esc(&note)
        );
    }
    t + "</table>\n"
}

/// The cumulative distribution of a latency: (milliseconds, fraction at or
/// below), from every sample, or from the percentiles alone when the report
/// has no histogram (Prometheus buckets).
fn cdf(p: &Percentiles) -> Vec<(f64, f64)> {
    let Some(h) = &p.histogram else {
        if p.count == 0 {
            return Vec::new();
        }
        return [
            (p.p50, 0.5),
            (p.p95, 0.95),
            (p.p99, 0.99),
            (p.p999, 0.999),
            (p.max, 1.0),
        ]
        .into_iter()
        .filter(|(s, _)| s.is_finite() && *s > 0.0)
        .map(|(s, f)| (s * 1e3, f))
        .collect();
    };
    let h = &h.0;
    let total = h.len() as f64;
    let mut seen = 0u64;
    h.iter_recorded()
        .map(|v| {
            seen += v.count_at_value();
            let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1e3;
            (ms.max(MS_FLOOR), seen as f64 / total)
        })
        .collect()
}

/// One CDF chart per latency with samples, the runs overlaid.
fn cdfs(runs: &[&Run]) -> String {
    let kinds = crate::verdicts::latencies(runs[0].m).map(|(name, _)| name);
    let mut out = String::new();
    for (k, name) in kinds.iter().enumerate() {
        let series: Vec<Series> = runs
            .iter()
            .zip(RUNS)
            .map(|(r, color)| {
                let p = crate::verdicts::latencies(r.m)[k].1;
                (r.label.as_str(), color, cdf(p))
            })
            .filter(|(_, _, pts)| !pts.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        out += &cdf_chart(name, &series);
    }
    if out.is_empty() {
        out = "<p class=\"empty\">no latency samples</p>".into();
    }
    out
}

fn cdf_chart(name: &str, series: &[Series]) -> String {
    let (lo, hi) = ms_range(
        series
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|(x, _)| *x / 1e3)),
    );
    let chart = svg(W, H, |root| {
        let mut chart = frame(
            root,
            format!("{name} (CDF)"),
            16,
            axis(
                (lo..hi).log_scale(),
                log_ticks(lo, hi),
                "ms (log scale)",
                ms_tick,
            ),
            axis(
                0f64..1.0,
                (0..=10).map(|i| f64::from(i) / 10.0).collect(),
                "samples at or below",
                percent_tick,
            ),
        )?;
        for (_, color, pts) in series {
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        }
        Ok(())
    });
    let keys: Vec<(&str, RGBColor)> = series.iter().map(|(l, c, _)| (*l, *c)).collect();
    figure(&chart, &keys)
}

/// The update latency's p50, p95 and p99 of each second with samples.
fn latency_over_time(run: &Run, scale: &TimeScale) -> String {
    let start = run.start();
    let windows: Vec<(f64, crate::measurements::WindowLatency)> = run
        .m
        .timeline
        .iter()
        .filter_map(|s| Some((s.at - start, s.update_latency?)))
        .collect();
    if windows.is_empty() {
        return format!(
            "<p class=\"empty\">{}: no update latency over time in the report</p>",
            esc(&run.label)
        );
    }
    type Pick = fn(&crate::measurements::WindowLatency) -> f64;
    let stats: [(&str, RGBColor, Pick); 3] = [
        ("p50", BLUE, |w| w.p50),
        ("p95", ORANGE, |w| w.p95),
        ("p99", RED, |w| w.p99),
    ];
    let (lo, hi) = scale.ms;
    let chart = svg(W, H, |root| {
        let mut chart = frame(
            root,
            format!("{}: update latency each second", run.label),
            16,
            axis(
                0f64..scale.x_hi,
                linear_ticks(scale.x_hi),
                "seconds since the start",
                count_tick,
            ),
            axis(
                (lo..hi).log_scale(),
                log_ticks(lo, hi),
                "ms (log scale)",
                ms_tick,
            ),
        )?;
        for (_, color, pick) in stats {
            let pts = |w: &[(f64, crate::measurements::WindowLatency)]| -> Vec<(f64, f64)> {
                w.iter()
                    .map(|(t, l)| (*t, (pick(l) * 1e3).max(MS_FLOOR)))
                    .collect()
            };
            // Seconds without samples break the line: one line per run of
            // consecutive seconds, a dot at every second.
            for segment in windows
                .chunk_by(|a, b| b.0 - a.0 < 1.5)
                .filter(|s| s.len() > 1)
            {
                chart.draw_series(LineSeries::new(pts(segment), color.stroke_width(1)))?;
            }
            chart.draw_series(
                pts(&windows)
                    .into_iter()
                    .map(|p| Circle::new(p, 2, color.filled())),
            )?;
        }
        Ok(())
    });
    let keys: Vec<(&str, RGBColor)> = stats.iter().map(|(l, c, _)| (*l, *c)).collect();
    figure(&chart, &keys)
}

/// Every change at its time since the start, with a bar from its first
/// to its last stream converged (a cross: superseded before every stream
/// converged).
fn fanout_timeline(run: &Run, scale: &TimeScale) -> String {
    let changes: Vec<&ChangeRecord> = run.m.fanouts.iter().collect();
    if changes.is_empty() {
        return format!(
            "<p class=\"empty\">{}: no change was measured</p>",
            esc(&run.label)
        );
    }
    let chart = svg(W, H, |root| {
        fanout_chart(
            root,
            &format!("{}: fan-out of each change", run.label),
            &changes,
            run.start(),
            scale,
        )
    });
    figure(
        &chart,
        &[
            ("first to last stream converged", BLUE),
            ("superseded before all converged (at its first)", RED),
        ],
    )
}

/// Draws `changes` (a bar from the first to the last stream converged, or
/// a cross when superseded) on `root`.
fn fanout_chart(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    changes: &[&ChangeRecord],
    start: f64,
    scale: &TimeScale,
) -> Result<(), DrawError> {
    let (lo, hi) = scale.ms;
    let ms = |s: Option<f64>| (s.unwrap_or(0.0) * 1e3).max(MS_FLOOR);
    let mut chart = frame(
        root,
        caption,
        14,
        axis(
            0f64..scale.x_hi,
            linear_ticks(scale.x_hi),
            "seconds since the start",
            count_tick,
        ),
        axis(
            (lo..hi).log_scale(),
            log_ticks(lo, hi),
            "ms after the change (log)",
            ms_tick,
        ),
    )?;
    let done = changes.iter().filter(|c| c.last_converged.is_some());
    chart.draw_series(done.clone().map(|c| {
        let x = c.at - start;
        PathElement::new(
            vec![(x, ms(c.first_converged)), (x, ms(c.last_converged))],
            BLUE.stroke_width(2),
        )
    }))?;
    chart.draw_series(
        done.map(|c| Circle::new((c.at - start, ms(c.last_converged)), 3, BLUE.filled())),
    )?;
    chart.draw_series(
        changes
            .iter()
            .filter(|c| c.last_converged.is_none())
            // Superseded before any stream converged: no time to draw.
            .filter_map(|c| {
                let first = c.first_converged?;
                Some(Cross::new(
                    (c.at - start, ms(Some(first))),
                    4,
                    RED.stroke_width(2),
                ))
            }),
    )?;
    Ok(())
}

/// One service's changes, for ranking.
struct ServiceChanges<'a> {
    service: &'a str,
    changes: Vec<&'a ChangeRecord>,
    superseded: usize,
    /// The slowest fan-out (seconds), superseded changes' first stream
    /// included.
    worst: f64,
}

/// Services by their changes, the worst first: the slowest fan-out, then
/// the most superseded changes.
fn ranked(changes: &[ChangeRecord]) -> Vec<ServiceChanges<'_>> {
    let mut by: std::collections::BTreeMap<&str, Vec<&ChangeRecord>> = Default::default();
    for c in changes {
        by.entry(c.service.as_str()).or_default().push(c);
    }
    let mut ranked: Vec<ServiceChanges> = by
        .into_iter()
        .map(|(service, mut changes)| {
            changes.sort_by(|a, b| a.at.total_cmp(&b.at));
            let worst = changes
                .iter()
                .filter_map(|c| c.last_converged.or(c.first_converged))
                .fold(0.0, f64::max);
            let superseded = changes
                .iter()
                .filter(|c| c.last_converged.is_none())
                .count();
            ServiceChanges {
                service,
                changes,
                superseded,
                worst,
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.worst
            .total_cmp(&a.worst)
            .then(b.superseded.cmp(&a.superseded))
            .then(a.service.cmp(b.service))
    });
    ranked
}

/// The services, worst first: a table, then the worst few drawn (each
/// change's fan-out and the endpoints after it), on the page's scales.
fn services(run: &Run, scale: &TimeScale) -> String {
    let ranked = ranked(&run.m.fanouts);
    if ranked.is_empty() {
        return String::new();
    }
    let mut t = format!(
        "<h2>Services, the worst first ({} with measured changes)</h2><table><tr><th>service</th><th>changes</th><th>superseded</th><th>median fan-out</th><th>slowest fan-out</th><th>endpoints at the end</th></tr>\n",
        ranked.len()
    );
    for s in ranked.iter().take(SERVICES_LISTED) {
        let done: Vec<f64> = s.changes.iter().filter_map(|c| c.last_converged).collect();
        let median = if done.is_empty() {
            "-".into()
        } else {
            duration(crate::verdicts::median(&done))
        };
        let endpoints = s
            .changes
            .last()
            .and_then(|c| c.endpoints)
            .map_or("-".into(), |n| n.to_string());
        t += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{median}</td><td>{}</td><td>{endpoints}</td></tr>\n",
            esc(s.service),
            s.changes.len(),
            s.superseded,
            duration(s.worst)
        );
    }
    t += "</table>\n";
    if ranked.len() > SERVICES_LISTED {
        t += &format!(
            "<p class=\"empty\">{} more services not listed</p>\n",
            ranked.len() - SERVICES_LISTED
        );
    }
    let start = run.start();
    let mut charts = String::new();
    for s in ranked.iter().take(SERVICES_DRAWN) {
        let fanout = svg(W, H_SMALL, |root| {
            fanout_chart(
                root,
                &format!("{}: fan-out", s.service),
                &s.changes,
                start,
                scale,
            )
        });
        charts += &figure(
            &fanout,
            &[
                ("first to last stream converged", BLUE),
                ("superseded", RED),
            ],
        );
        charts += &endpoints_chart(s, start, scale);
    }
    t + &section(
        &format!(
            "The {} worst services' changes",
            ranked.len().min(SERVICES_DRAWN)
        ),
        &charts,
    )
}

/// A service's endpoint count after each of its changes, as steps.
fn endpoints_chart(s: &ServiceChanges, start: f64, scale: &TimeScale) -> String {
    let steps: Vec<(f64, f64)> = s
        .changes
        .iter()
        .filter_map(|c| Some((c.at - start, c.endpoints? as f64)))
        .collect();
    if steps.is_empty() {
        return format!(
            "<p class=\"flat\">{}: endpoint counts not in the report</p>",
            esc(s.service)
        );
    }
    if steps.iter().all(|(_, n)| *n == 0.0) {
        return format!(
            "<p class=\"flat\">{}: 0 endpoints after every change</p>",
            esc(s.service)
        );
    }
    let mut line = Vec::new();
    for (i, (t, n)) in steps.iter().enumerate() {
        if i > 0 {
            line.push((*t, steps[i - 1].1));
        }
        line.push((*t, *n));
    }
    line.push((scale.x_hi, steps[steps.len() - 1].1));
    let y_hi = steps.iter().map(|(_, n)| *n).fold(1.0, f64::max) * 1.15;
    let chart = svg(W, H_SMALL, |root| {
        let mut chart = frame(
            root,
            format!("{}: endpoints", s.service),
            14,
            axis(
                0f64..scale.x_hi,
                linear_ticks(scale.x_hi),
                "seconds since the start",
                count_tick,
            ),
            axis(0f64..y_hi, linear_ticks(y_hi), "endpoints", count_tick),
        )?;
        chart.draw_series(LineSeries::new(line, GREEN.stroke_width(2)))?;
        Ok(())
    });
    figure(&chart, &[("endpoints after each change", GREEN)])
}

/// A section `title` of streams, errors, resets and stale streams over
/// time, the runs overlaid; a figure zero all along is one line of text
/// under the charts.
fn timelines(runs: &[&Run], scale: &TimeScale, title: &str) -> String {
    if runs.iter().all(|r| r.m.timeline.is_empty()) {
        return section(title, "<p class=\"empty\">no timeline in the report</p>");
    }
    type Pick = fn(&TimelineSample) -> f64;
    let figures: [(&str, Pick); 4] = [
        ("streams open", |s| s.streams_active as f64),
        ("errors (cumulative)", |s| s.errors as f64),
        ("resets (cumulative)", |s| s.resets as f64),
        ("stale streams", |s| s.stale as f64),
    ];
    let mut charts = String::new();
    let mut flat = String::new();
    for (name, pick) in figures {
        let series: Vec<Series> = runs
            .iter()
            .zip(RUNS)
            .map(|(r, color)| {
                let start = r.start();
                let pts =
                    r.m.timeline
                        .iter()
                        .map(|s| (s.at - start, pick(s)))
                        .collect();
                (r.label.as_str(), color, pts)
            })
            .collect();
        if series
            .iter()
            .all(|(_, _, p)| p.iter().all(|(_, y)| *y == 0.0))
        {
            flat += &format!("<p class=\"flat\">{name}: 0 throughout</p>\n");
            continue;
        }
        charts += &count_chart(name, scale.x_hi, &series);
    }
    section(title, &charts) + &flat
}

/// Counts over time, on integer ticks.
fn count_chart(name: &str, x_hi: f64, series: &[Series]) -> String {
    let y_hi = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max)
        * 1.1;
    let chart = svg(W, H, |root| {
        let mut chart = frame(
            root,
            name,
            16,
            axis(
                0f64..x_hi,
                linear_ticks(x_hi),
                "seconds since the start",
                count_tick,
            ),
            axis(0f64..y_hi, linear_ticks(y_hi), "", count_tick),
        )?;
        for (_, color, pts) in series {
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        }
        Ok(())
    });
    let keys: Vec<(&str, RGBColor)> = series.iter().map(|(l, c, _)| (*l, *c)).collect();
    figure(&chart, &keys)
}

/// An SVG chart of `w` x `h` drawn by `draw` (its error, if any, shown in
/// place of the chart).
fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), DrawError>,
) -> String {
    let mut s = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
    };
    match result {
        Ok(()) => s,
        Err(e) => format!(
            "<p class=\"empty\">chart not drawn: {}</p>",
            esc(&e.to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{latency::HdrBlob, measurements::WindowLatency};

    /// A run of `secs` seconds whose updates take `ms` milliseconds, with
    /// two services: `slow` (one change at 10x) and `a`.
    fn measured(secs: u32, ms: f64) -> Measurements {
        let mut h = crate::latency::mk_hdr();
        for us in [1.0, 2.0, 5.0, 50.0] {
            h.record((us * ms * 1e3) as u64).unwrap();
        }
        let mut p = Percentiles::from_hdr(&h);
        p.histogram = Some(HdrBlob(h));
        let change = |service: &str, at: f64, last: Option<f64>, endpoints| ChangeRecord {
            service: service.into(),
            at,
            first_converged: Some(ms / 1e3),
            last_converged: last,
            endpoints: Some(endpoints),
        };
        Measurements {
            update_latency: p,
            timeline: (0..secs)
                .map(|i| TimelineSample {
                    at: 100.0 + f64::from(i),
                    streams_active: 10,
                    updates: 3 * u64::from(i),
                    update_latency: (i % 3 == 0).then_some(WindowLatency {
                        count: 4,
                        p50: ms / 1e3,
                        p95: 2.0 * ms / 1e3,
                        p99: 5.0 * ms / 1e3,
                    }),
                    ..Default::default()
                })
                .collect(),
            fanouts: vec![
                change("a", 101.0, Some(2.0 * ms / 1e3), 3),
                change("a", 102.0, None, 4),
                change("slow", 103.0, Some(20.0 * ms / 1e3), 5),
                change("a", 104.0, Some(3.0 * ms / 1e3), 0),
            ],
            ..Default::default()
        }
    }

    /// The SVG charts of `page`, in order.
    fn charts(page: &str) -> Vec<&str> {
        page.split("<svg")
            .skip(1)
            .map(|s| s.split("</svg>").next().unwrap())
            .collect()
    }

    /// The tick labels of an SVG chart anchored `anchor`: `end` for the y
    /// axis, `middle` for the x axis (captions and axis names included,
    /// which are not numbers).
    fn labels(svg: &str, anchor: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter(|t| t.contains(&format!("text-anchor=\"{anchor}\"")))
            .filter_map(|t| t.split_once('>')?.1.split("</text>").next())
            .map(|t| t.trim().to_string())
            .collect()
    }

    /// The texts of an SVG chart, in order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split("</text>").next())
            .map(|t| t.trim().to_string())
            .collect()
    }

    #[test]
    fn a_run_page_is_self_contained_with_every_chart() {
        let m = measured(5, 10.0);
        let run = Run::new("x", &m)
            .meta("version", "1.2.3 (abc123)")
            .meta("seed", 42)
            .meta("plan", "{\n  \"services\": 2\n}")
            .meta("empty", "");
        let page = run_page("run x", &run, &[]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        // Over time, one CDF, the fan-out, two per service drawn (2), and
        // streams open (errors, resets and stale streams are zero all along).
        assert_eq!(charts(&page).len(), 8, "{page}");
        for flat in [
            "errors (cumulative)",
            "resets (cumulative)",
            "stale streams",
        ] {
            assert!(page.contains(&format!("{flat}: 0 throughout")), "{flat}");
        }
        assert!(!page.contains("<script"));
        // Nothing loaded from elsewhere (the SVG namespace URI is a name).
        assert!(!page.contains("src=") && !page.contains("<link"), "{page}");
        assert!(!page.contains("chart not drawn"), "{page}");
        // Every line has two points at least (a lone second is a dot).
        for line in page.split("<polyline").skip(1) {
            let points = line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            assert!(points.trim().split(' ').count() >= 2, "{line}");
        }
        assert!(page.contains("no SLO was judged"));
        // The run described; an empty value left out; a plan folded.
        assert!(
            page.contains("<td>version</td><td>1.2.3 (abc123)</td>"),
            "{page}"
        );
        assert!(page.contains("<td>seed</td><td>42</td>"));
        assert!(!page.contains(">empty<"));
        assert!(page.contains(
            "<details><summary>{ ...</summary><pre>{\n  &quot;services&quot;: 2\n}</pre>"
        ));
        // The percentile table, below a second in ms.
        assert!(
            page.contains("<td>update_latency</td><td>4</td><td>20.0 ms</td>"),
            "{page}"
        );
    }

    #[test]
    fn latency_axes_tick_at_1_2_5_in_ms_and_count_axes_at_integers() {
        assert_eq!(
            log_ticks(0.3, 700.0),
            [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
        assert_eq!(log_ticks(0.01, 0.03), [0.01, 0.02]);
        assert_eq!(linear_ticks(1.1), [0.0, 1.0]);
        assert_eq!(linear_ticks(7.0), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(
            linear_ticks(37.0),
            [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0]
        );
        assert_eq!(ms_tick(&(0.1 * 2.0)), "0.2");
        assert_eq!(ms_tick(&2000.0), "2000");
        assert_eq!(duration(0.0123), "12.3 ms");
        assert_eq!(duration(2.5), "2.50 s");
        // A narrow range still gets ticks: widened to 5x.
        let (lo, hi) = ms_range([0.010, 0.011].into_iter());
        assert!(hi / lo >= 5.0 - 1e-9 && lo < 10.0 && hi > 11.0, "{lo} {hi}");
        assert!(log_ticks(lo, hi).len() >= 2);

        // Every chart of a page: the ticks of its log (ms) axis are all 1,
        // 2 or 5 times a power of ten; of its count axes, integers.
        let m = measured(40, 3.0);
        let page = run_page("run", &Run::new("x", &m), &[]);
        let is_125 = |v: f64| {
            let mantissa = v / 10f64.powf(v.log10().floor());
            [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6)
        };
        let numbers = |labels: Vec<String>| -> Vec<f64> {
            labels.iter().filter_map(|t| t.parse().ok()).collect()
        };
        let mut log_axes = 0;
        for chart in charts(&page) {
            let (y, x) = (
                numbers(labels(chart, "end")),
                numbers(labels(chart, "middle")),
            );
            let log = if chart.contains("(CDF)") {
                x
            } else if chart.contains("ms (log") || chart.contains("ms after the change (log)") {
                y
            } else {
                // Counts and seconds: whole numbers.
                assert!(y.iter().chain(&x).all(|v| v.fract() == 0.0), "{chart}");
                continue;
            };
            log_axes += 1;
            assert!(log.len() >= 2, "{log:?} in {chart}");
            assert!(log.iter().all(|v| is_125(*v)), "{log:?} in {chart}");
            for t in texts(chart) {
                assert!(!t.contains("e-") && !t.ends_with(".0"), "{t} in {chart}");
            }
        }
        assert_eq!(log_axes, 5, "over time, CDF, fan-out, two services");
        // The streams chart's y ticks are integers, 10 among them.
        let streams = charts(&page)
            .into_iter()
            .find(|c| c.contains("streams open"))
            .unwrap();
        let ys = labels(streams, "end");
        assert!(ys.iter().any(|t| t == "10"), "{ys:?}");
        assert!(ys.iter().all(|t| !t.contains('.')), "{ys:?}");
    }

    #[test]
    fn legends_sit_under_their_charts_never_on_the_data() {
        let (a, b) = (measured(5, 10.0), measured(5, 20.0));
        let rows = crate::verdicts::compare(&a, &b, &Default::default());
        let page = compare_page(&Run::new("base-run", &a), &Run::new("new-run", &b), &rows);
        for chart in charts(&page) {
            // The caption (the first text) may name a run; nothing else does.
            let texts = texts(chart);
            assert!(
                !texts[1..]
                    .iter()
                    .any(|t| t.contains("base-run") || t.contains("new-run") || t == "p99"),
                "a legend inside a chart: {chart}"
            );
        }
        assert!(page.contains("<figcaption><span class=\"key\"><i style=\"background:rgb(31,119,180)\"></i>base-run</span>"));
        assert!(page.contains("</i>new-run</span>"));
        assert!(!page.contains("chart not drawn"), "{page}");
    }

    #[test]
    fn compared_runs_are_drawn_on_shared_scales() {
        // Different speeds and lengths.
        let (a, b) = (measured(5, 1.0), measured(30, 40.0));
        let rows = crate::verdicts::compare(&a, &b, &Default::default());
        let page = compare_page(&Run::new("base", &a), &Run::new("new", &b), &rows);
        let axes = |caption: &str| -> Vec<Vec<String>> {
            charts(&page)
                .into_iter()
                .filter(|c| c.contains(caption))
                .map(|c| {
                    texts(c)
                        .into_iter()
                        .filter(|t| !t.contains(caption))
                        .collect()
                })
                .collect()
        };
        for caption in [": update latency each second", ": fan-out of each change"] {
            let both = axes(caption);
            assert_eq!(both.len(), 2, "{caption}");
            assert_eq!(both[0], both[1], "{caption}: the two charts' scales differ");
            // The scale covers both: 30 s and 40 ms x 20 (the slow change).
            assert!(both[0].iter().any(|t| t == "25"), "{:?}", both[0]);
            assert!(both[0].iter().any(|t| t == "500"), "{:?}", both[0]);
            assert!(both[0].iter().any(|t| t == "1"), "{:?}", both[0]);
        }
    }

    #[test]
    fn services_are_ranked_the_worst_first() {
        let m = measured(5, 10.0);
        let ranked = ranked(&m.fanouts);
        let names: Vec<&str> = ranked.iter().map(|s| s.service).collect();
        assert_eq!(names, ["slow", "a"]);
        assert_eq!((ranked[1].changes.len(), ranked[1].superseded), (3, 1));
        let page = run_page("run", &Run::new("x", &m), &[]);
        let table = page.split("Services, the worst first").nth(1).unwrap();
        assert!(
            table.contains("<tr><td>slow</td><td>1</td><td>0</td><td>200.0 ms</td><td>200.0 ms</td><td>5</td></tr>"),
            "{table}"
        );
        assert!(
            table.contains(
                "<tr><td>a</td><td>3</td><td>1</td><td>25.0 ms</td><td>30.0 ms</td><td>0</td></tr>"
            ),
            "{table}"
        );
        assert!(table.find("<td>slow</td>") < table.find("<td>a</td>"));
        // Its endpoints chart steps 3 -> 4 -> 0 (a's last change).
        let endpoints = charts(&page)
            .into_iter()
            .find(|c| c.contains("a: endpoints"))
            .unwrap();
        assert!(texts(endpoints).iter().any(|t| t == "4"));
    }

    #[test]
    fn a_page_without_timeline_or_changes_says_so() {
        let m = Measurements::default();
        let page = run_page("empty", &Run::new("x", &m), &[]);
        assert!(page.contains("no latency samples"));
        assert!(page.contains("x: no update latency over time in the report"));
        assert!(page.contains("x: no change was measured"));
        assert!(page.contains("no timeline in the report"));
        assert_eq!(charts(&page).len(), 0);
    }
}
