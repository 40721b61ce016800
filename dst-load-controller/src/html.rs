//! Pictures of a run, or of two compared: one self-contained HTML page of
//! SVG charts drawn with plotters (no script, no network, no font files).
//! Pure: builds strings from reports.

use plotters::{coord::ranged1d::Ranged, prelude::*};

use crate::{
    latency::Percentiles,
    measurements::{ChangeRecord, Measurements, TimelineSample},
    verdicts::{Row, Verdict},
};

/// One run as drawn: a label and its measurements.
pub struct Run<'a> {
    label: String,
    m: &'a Measurements,
}

impl<'a> Run<'a> {
    /// `label` names the run in legends.
    pub fn new(label: &str, m: &'a Measurements) -> Self {
        Self {
            label: label.to_string(),
            m,
        }
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
}

const W: u32 = 760;
const H: u32 = 300;
const SERIES: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];

/// The page of one run (`run --html`, `client --html`, `report --html`).
pub fn run_page(title: &str, run: &Run, slos: &[crate::slo::Verdict]) -> String {
    let mut body = String::new();
    body += &slo_table(slos);
    body += &section("Latency distributions", &cdfs(&[run]));
    body += &section("Changes and their fan-out", &fanout_timeline(run));
    body += &section("Streams over time", &timelines(&[run]));
    page(title, &body)
}

/// The page of a comparison (`compare --html`): verdicts, then both runs overlaid.
pub fn compare_page(base: &Run, new: &Run, rows: &[Row]) -> String {
    let mut body = verdict_table(rows);
    body += &section("Latency distributions (base and new)", &cdfs(&[base, new]));
    body += &section(
        &format!("Changes and their fan-out: {}", base.label),
        &fanout_timeline(base),
    );
    body += &section(
        &format!("Changes and their fan-out: {}", new.label),
        &fanout_timeline(new),
    );
    body += &section("Streams over time (base and new)", &timelines(&[base, new]));
    page(&format!("compare {} -> {}", base.label, new.label), &body)
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
            .map(|s| (f64::from(s.load), pick(s, kind, stat).max(1e-6)))
            .collect()
    };
    let lines = [
        ("update p50", series("update_latency", "p50")),
        ("update p99", series("update_latency", "p99")),
        ("fan-out max", series("fanout_completion", "max")),
    ];
    let marks: Vec<(f64, f64, bool)> = steps
        .iter()
        .map(|s| {
            (
                f64::from(s.load),
                pick(s, "update_latency", "p99").max(1e-6),
                s.passed,
            )
        })
        .collect();
    let x_hi = marks.iter().map(|m| m.0).fold(1.0f64, f64::max) * 1.1;
    let y_lo = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(f64::INFINITY, f64::min)
        .max(1e-6);
    let y_hi = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(y_lo * 10.0, f64::max);
    body += &section(
        "Latency by load (green: the step held its SLOs; red: it failed)",
        &svg(|root| {
            let mut chart = ChartBuilder::on(root)
                .caption(format!("{scenario}: the red line"), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..x_hi, (y_lo / 1.5..y_hi * 1.5).log_scale())
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc(match found.dimension {
                    crate::red_line::Dimension::Streams => "streams per service",
                    crate::red_line::Dimension::Services => "services",
                })
                .y_desc("seconds (log scale)")
                .y_label_formatter(&|y| format_seconds(*y))
                .draw()
                .map_err(|e| e.to_string())?;
            let colors = [SERIES[0], RGBColor(127, 127, 127), RGBColor(148, 103, 189)];
            for ((label, pts), color) in lines.iter().zip(colors) {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            }
            chart
                .draw_series(marks.iter().map(|(x, y, pass)| {
                    let c = if *pass {
                        RGBColor(44, 160, 44)
                    } else {
                        SERIES[1]
                    };
                    Circle::new((*x, *y), 5, c.filled())
                }))
                .map_err(|e| e.to_string())?;
            legend(&mut chart, SeriesLabelPosition::UpperLeft)
        }),
    );
    let mut t = "<h2>Steps, in the order run</h2><table><tr><th>load</th><th>streams</th><th>update p50</th><th>update p99</th><th>fan-out max</th><th>cpu</th><th>verdict</th></tr>\n".to_string();
    for s in &found.steps {
        let ms = |kind: &str, stat: &str| format!("{:.1} ms", pick(s, kind, stat) * 1e3);
        let (class, word) = match (s.passed, s.client_bound) {
            (_, true) => ("fail", "client-bound"),
            (true, _) => ("pass", "PASS"),
            (false, _) => ("fail", "FAIL"),
        };
        t += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td><td class=\"{class}\">{word}</td></tr>\n",
            s.load,
            s.streams,
            ms("update_latency", "p50"),
            ms("update_latency", "p99"),
            ms("fanout_completion", "max"),
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
         .charts{{display:flex;flex-wrap:wrap;gap:12px}}.empty{{color:#888}}\
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
            (Some(m), None) if v.samples.is_some() => format!("{:.1} ms", m * 1e3),
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

fn verdict_table(rows: &[Row]) -> String {
    let mut t = "<h2>Verdicts</h2><table><tr><th>figure</th><th>base</th><th>new</th><th>interval of the change</th><th>verdict</th></tr>\n".to_string();
    for r in rows {
        let v = |x: f64| r.show(x);
        let interval = r.interval.map_or(String::new(), |(lo, hi)| {
            format!("{:+.0}% .. {:+.0}%", lo * 100.0, hi * 100.0)
        });
        let class = match r.verdict {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Same => "same",
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

/// The cumulative distribution of a latency: (seconds, fraction at or
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
        .collect();
    };
    let h = &h.0;
    let total = h.len() as f64;
    let mut seen = 0u64;
    h.iter_recorded()
        .map(|v| {
            seen += v.count_at_value();
            let s = h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            (s.max(1e-6), seen as f64 / total)
        })
        .collect()
}

/// One CDF chart per latency with samples, the runs overlaid.
fn cdfs(runs: &[&Run]) -> String {
    let kinds = crate::verdicts::latencies(runs[0].m).map(|(name, _)| name);
    let mut out = String::new();
    for (k, name) in kinds.iter().enumerate() {
        let series: Vec<(String, Vec<(f64, f64)>)> = runs
            .iter()
            .map(|r| {
                let p = crate::verdicts::latencies(r.m)[k].1;
                (r.label.clone(), cdf(p))
            })
            .filter(|(_, pts)| !pts.is_empty())
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

fn cdf_chart(name: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let lo = xs.clone().fold(f64::INFINITY, f64::min).max(1e-6);
    let hi = xs.fold(0.0f64, f64::max).max(lo * 10.0);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{name} (CDF)"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d((lo / 1.5..hi * 1.5).log_scale(), 0f64..1.0f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds (log scale)")
            .y_desc("fraction of samples")
            .x_label_formatter(&|x| format_seconds(*x))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines(&mut chart, series)?;
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

fn format_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.0}s")
    } else if s >= 1e-3 {
        format!("{:.0}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

/// Every change at its time since the start, with a bar from its first
/// to its last stream converged (a cross: superseded before every stream
/// converged).
fn fanout_timeline(run: &Run) -> String {
    let changes: &[ChangeRecord] = &run.m.fanouts;
    if changes.is_empty() {
        return "<p class=\"empty\">no change was measured</p>".into();
    }
    let start = run.start();
    let x_hi = changes.iter().map(|c| c.at - start).fold(1.0f64, f64::max) * 1.05;
    let y_hi = changes
        .iter()
        .filter_map(|c| c.last_converged.or(c.first_converged))
        .fold(0.001f64, f64::max)
        * 1.1;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: fan-out of each change", run.label),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_hi, 0f64..y_hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the start")
            .y_desc("seconds after the change")
            .draw()
            .map_err(|e| e.to_string())?;
        let done = changes.iter().filter(|c| c.last_converged.is_some());
        chart
            .draw_series(done.clone().map(|c| {
                let x = c.at - start;
                PathElement::new(
                    vec![
                        (x, c.first_converged.unwrap_or(0.0)),
                        (x, c.last_converged.unwrap_or(0.0)),
                    ],
                    SERIES[0].stroke_width(2),
                )
            }))
            .map_err(|e| e.to_string())?
            .label("first to last stream converged")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], SERIES[0]));
        chart
            .draw_series(done.map(|c| {
                Circle::new(
                    (c.at - start, c.last_converged.unwrap_or(0.0)),
                    3,
                    SERIES[0].filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                changes
                    .iter()
                    .filter(|c| c.last_converged.is_none())
                    .map(|c| {
                        Cross::new(
                            (c.at - start, c.first_converged.unwrap_or(0.0)),
                            4,
                            SERIES[1].stroke_width(2),
                        )
                    }),
            )
            .map_err(|e| e.to_string())?
            .label("superseded")
            .legend(|(x, y)| Cross::new((x + 9, y), 4, SERIES[1]));
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Streams, errors, resets and stale streams over time, the runs overlaid.
fn timelines(runs: &[&Run]) -> String {
    if runs.iter().all(|r| r.m.timeline.is_empty()) {
        return "<p class=\"empty\">no timeline in the report</p>".into();
    }
    type Pick = fn(&TimelineSample) -> f64;
    let figures: [(&str, Pick); 4] = [
        ("streams open", |s| s.streams_active as f64),
        ("errors (cumulative)", |s| s.errors as f64),
        ("resets (cumulative)", |s| s.resets as f64),
        ("stale streams", |s| s.stale as f64),
    ];
    let mut out = String::new();
    for (name, pick) in figures {
        let series: Vec<(String, Vec<(f64, f64)>)> = runs
            .iter()
            .map(|r| {
                let start = r.start();
                let pts =
                    r.m.timeline
                        .iter()
                        .map(|s| (s.at - start, pick(s)))
                        .collect();
                (r.label.clone(), pts)
            })
            .collect();
        out += &line_chart(name, &series);
    }
    out
}

fn line_chart(name: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let x_hi = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0f64, f64::max);
    let y_hi = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max)
        * 1.1;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_hi, 0f64..y_hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the start")
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines(&mut chart, series)?;
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Draws each of `series` as a line, in turn in the [`SERIES`] colours, with
/// its label in the legend.
fn draw_lines<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    Ok(())
}

/// The chart's legend at `position`, on a light background.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// An SVG chart of `W` x `H` drawn by `draw` (its error, if any, shown in
/// place of the chart).
fn svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut s = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut s, (W, H)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => s,
        Err(e) => format!("<p class=\"empty\">chart not drawn: {}</p>", esc(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::HdrBlob;

    fn measured() -> Measurements {
        let mut h = crate::latency::mk_hdr();
        for us in [1_000, 2_000, 5_000, 50_000] {
            h.record(us).unwrap();
        }
        let mut p = Percentiles::from_hdr(&h);
        p.histogram = Some(HdrBlob(h));
        Measurements {
            update_latency: p,
            timeline: (0..5)
                .map(|i| TimelineSample {
                    at: 100.0 + f64::from(i),
                    streams_active: 10,
                    updates: 3 * i as u64,
                    ..Default::default()
                })
                .collect(),
            fanouts: vec![
                ChangeRecord {
                    service: "a".into(),
                    at: 101.0,
                    first_converged: Some(0.001),
                    last_converged: Some(0.05),
                    endpoints: Some(3),
                },
                ChangeRecord {
                    service: "a".into(),
                    at: 102.0,
                    first_converged: Some(0.002),
                    last_converged: None,
                    endpoints: Some(4),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_run_page_is_self_contained_with_every_chart() {
        let m = measured();
        let page = run_page("run x", &Run::new("x", &m), &[]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        // One CDF, the fan-out timeline, four timelines.
        assert_eq!(page.matches("<svg").count(), 6, "{page}");
        assert!(!page.contains("<script"));
        // Nothing loaded from elsewhere (the SVG namespace URI is a name).
        assert!(!page.contains("src=") && !page.contains("<link"), "{page}");
        assert!(!page.contains("chart not drawn"), "{page}");
        assert!(page.contains("no SLO was judged"));
    }

    #[test]
    fn a_compare_page_overlays_both_runs() {
        let (a, b) = (measured(), measured());
        let rows = crate::verdicts::compare(&a, &b, &Default::default());
        let page = compare_page(&Run::new("base", &a), &Run::new("new", &b), &rows);
        assert!(page.contains(">base<") && page.contains(">new<"), "{page}");
        assert!(page.contains("update_latency.p50"));
        assert!(!page.contains("chart not drawn"), "{page}");
    }
}
