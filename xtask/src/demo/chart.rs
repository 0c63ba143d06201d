//! The demo's chart, `target/demo/demo.svg`: a pure function from the samples and the phases'
//! times to an SVG document, one panel per worker, 1,000 px wide natively (with a viewBox, so it
//! scales): the queue length on a left axis, the replicas on a right one, time in seconds below,
//! the idle, burst and drain phases shaded and named, and the moments ebb activated
//! (replicas 0 -> 1 or more) and deactivated (-> 0) each worker marked.

use std::fmt::Write as _;

/// One sample of one worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    /// Seconds from the demo's start.
    pub at: f64,
    /// The queue's length as ebb read it, when it could be read.
    pub queue: Option<f64>,
    /// The Deployment's replicas.
    pub replicas: i64,
}

/// One worker's samples, drawn as one panel.
pub(crate) struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<Point>,
}

/// When the demo drove each phase, in seconds from its start: idle until `burst_at`, the burst
/// until `drain_at`, the drain until `drained_at` (every queue read empty), idle after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    pub burst_at: f64,
    pub drain_at: Option<f64>,
    pub drained_at: Option<f64>,
}

/// The legend's entries and the axes' titles (the test looks for them).
pub(crate) const QUEUE_AXIS: &str = "queue length (messages)";
pub(crate) const REPLICAS_AXIS: &str = "replicas";
pub(crate) const TIME_AXIS: &str = "time (s)";
pub(crate) const LEGEND_QUEUE: &str = "queue length as ebb read it (left axis)";
pub(crate) const LEGEND_REPLICAS: &str = "Deployment replicas (right axis)";
pub(crate) const LEGEND_ACTIVATED: &str = "ebb activated (replicas 0 \u{2192} 1+)";
pub(crate) const LEGEND_DEACTIVATED: &str = "ebb deactivated (replicas \u{2192} 0)";

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 80.0;
const PLOT_RIGHT: f64 = WIDTH - RIGHT;
/// Above each plot: the worker's name.
const PANEL_HEAD: f64 = 30.0;
/// The data's own height in each plot, below the strip of phase and marker labels.
const DATA_H: f64 = 190.0;
/// Below each plot: tick labels and the time axis' title.
const PANEL_FOOT: f64 = 50.0;
const PANEL_GAP: f64 = 16.0;
/// The strip at the top of each plot for the phases' names (one row) and the markers' labels.
const ROW_H: f64 = 17.0;

const FONT: f64 = 13.0;
const TICK_FONT: f64 = 12.0;
const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#e8710a";
const GREEN: &str = "#2ca02c";
const RED: &str = "#d62728";

/// Queue length and replicas over time, one panel per worker.
pub(crate) fn svg(series: &[Series], phases: &Phases) -> String {
    let end = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.at))
        .fold(1.0_f64, f64::max);
    let time_step = nice_step(end / 10.0, 1.0);
    let time_max = (end / time_step).ceil() * time_step;
    let x = |t: f64| LEFT + (PLOT_RIGHT - LEFT) * (t / time_max).clamp(0.0, 1.0);

    let mut body = String::new();
    let legend_top = 46.0;
    let legend_bottom = legend(&mut body, legend_top);
    let mut top = legend_bottom + 14.0;
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            top += PANEL_GAP;
        }
        top = panel(&mut body, s, phases, top, &x, time_step, time_max);
    }
    let height = top.ceil();

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="26" font-size="18" font-weight="bold">ebb demo: queue length and replicas of each worker over time</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="43" font-size="12" fill="#555">Sampled about once a second: the queue as ebb's metrics API served it, the replicas from each Deployment's spec.</text>"##
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

/// The legend: the two lines on one row, the two markers below them, in two columns (the phases
/// are named where they are shaded); returns where it ends.
fn legend(out: &mut String, top: f64) -> f64 {
    let rows = [
        [
            (BLUE, false, LEGEND_QUEUE),
            (ORANGE, false, LEGEND_REPLICAS),
        ],
        [
            (GREEN, true, LEGEND_ACTIVATED),
            (RED, true, LEGEND_DEACTIVATED),
        ],
    ];
    let swatch_w = 28.0;
    let column = rows
        .iter()
        .map(|r| swatch_w + 8.0 + text_width(r[0].2, FONT) + 30.0)
        .fold(0.0_f64, f64::max);
    let mut y = top;
    let _ = writeln!(out, r#"<g class="legend">"#);
    for row in rows {
        y += 19.0;
        for (i, (color, dashed, label)) in row.into_iter().enumerate() {
            let x = LEFT + column * i as f64;
            let dash = if dashed {
                r#" stroke-dasharray="5,3""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{:.1}" y="{y:.1}">{}</text>"#,
                y - 4.5,
                x + swatch_w,
                y - 4.5,
                x + swatch_w + 8.0,
                escape(label)
            );
        }
    }
    let _ = writeln!(out, "</g>");
    y + 6.0
}

/// One worker's panel from `top`; returns where it ends.
fn panel(
    out: &mut String,
    series: &Series,
    phases: &Phases,
    top: f64,
    x: &dyn Fn(f64) -> f64,
    time_step: f64,
    time_max: f64,
) -> f64 {
    let points = &series.points;
    let name = escape(series.name);

    // The markers, and their labels placed in rows of the strip so that none overlaps another.
    let mut markers = Vec::new();
    for pair in points.windows(2) {
        let (before, now) = (pair[0].replicas, pair[1].replicas);
        if before == 0 && now > 0 {
            markers.push((pair[1].at, true));
        } else if before > 0 && now == 0 {
            markers.push((pair[1].at, false));
        }
    }
    let mut rows: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut placed = Vec::new();
    for &(at, activated) in &markers {
        let label = format!(
            "{} at {at:.0} s",
            if activated {
                "activated"
            } else {
                "deactivated"
            }
        );
        let w = text_width(&label, TICK_FONT);
        let mx = x(at);
        // Right of the line, or left of it when it would run past the plot.
        let (x0, anchor_x, anchor) = if mx + 5.0 + w <= PLOT_RIGHT - 2.0 {
            (mx + 5.0, mx + 5.0, "start")
        } else {
            (mx - 5.0 - w, mx - 5.0, "end")
        };
        let x1 = x0 + w;
        let row = rows
            .iter()
            .position(|r| r.iter().all(|&(a, b)| x1 + 4.0 < a || x0 > b + 4.0))
            .unwrap_or_else(|| {
                rows.push(Vec::new());
                rows.len() - 1
            });
        rows[row].push((x0, x1));
        placed.push((at, activated, label, anchor_x, anchor, row));
    }
    let strip = ROW_H * (1 + rows.len()) as f64 + 8.0;

    let plot_top = top + PANEL_HEAD;
    let data_top = plot_top + strip;
    let plot_bottom = data_top + DATA_H;

    let queue_peak = points
        .iter()
        .filter_map(|p| p.queue.filter(|q| q.is_finite()))
        .fold(0.0_f64, f64::max);
    let replicas_peak = points.iter().map(|p| p.replicas).max().unwrap_or(0).max(0);
    let queue_step = nice_step(queue_peak.max(1.0) / 5.0, 1.0);
    let intervals = (queue_peak.max(1.0) / queue_step).ceil().max(1.0) as i64;
    let queue_max = queue_step * intervals as f64;
    // The replicas' ticks are integers on the queue's gridlines.
    let replicas_step = ((replicas_peak.max(1) + intervals - 1) / intervals).max(1);
    let replicas_max = (replicas_step * intervals) as f64;
    let y = |v: f64, max: f64| plot_bottom - DATA_H * (v / max).clamp(0.0, 1.0);

    let _ = writeln!(out, r#"<g class="panel" data-worker="{name}">"#);
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">{name} <tspan font-weight="normal" font-size="13" fill="#555">(queue peak {queue_peak:.0} messages, {replicas_peak} replicas at most)</tspan></text>"##,
        top + 20.0
    );

    // The phases, shaded over the whole plot and named in the strip's first row.
    let mut bands = vec![("idle", 0.0, phases.burst_at)];
    match phases.drain_at {
        Some(drain_at) => {
            bands.push(("burst", phases.burst_at, drain_at));
            match phases.drained_at {
                Some(drained_at) => {
                    bands.push(("drain", drain_at, drained_at));
                    bands.push(("idle", drained_at, time_max));
                }
                None => bands.push(("drain", drain_at, time_max)),
            }
        }
        None => bands.push(("burst", phases.burst_at, time_max)),
    }
    for (label, from, to) in &bands {
        let (x0, x1) = (x(*from), x(*to));
        if x1 <= x0 {
            continue;
        }
        let _ = writeln!(
            out,
            r#"<rect class="phase" x="{x0:.1}" y="{plot_top:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
            x1 - x0,
            plot_bottom - plot_top,
            phase_fill(label)
        );
        if x1 - x0 >= text_width(label, FONT) + 6.0 {
            let _ = writeln!(
                out,
                r##"<text class="phase-label" x="{:.1}" y="{:.1}" text-anchor="middle" font-style="italic" fill="#444">{label}</text>"##,
                (x0 + x1) / 2.0,
                plot_top + ROW_H - 3.0
            );
        }
    }

    // Gridlines and the left axis (queue), the right axis (replicas) on the same lines.
    for i in 0..=intervals {
        let yy = y(queue_step * i as f64, queue_max);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{PLOT_RIGHT}" y2="{yy:.1}" stroke="#d8d8d8" stroke-width="1"/>"##
        );
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{yy:.1}" x2="{LEFT}" y2="{yy:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="{TICK_FONT}" fill="{BLUE}">{}</text>"##,
            LEFT - 5.0,
            LEFT - 8.0,
            yy + 4.0,
            number(queue_step * i as f64)
        );
        let _ = writeln!(
            out,
            r##"<line x1="{PLOT_RIGHT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" font-size="{TICK_FONT}" fill="{ORANGE}">{}</text>"##,
            PLOT_RIGHT + 5.0,
            PLOT_RIGHT + 8.0,
            yy + 4.0,
            replicas_step * i
        );
    }
    let mid = (data_top + plot_bottom) / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {mid:.1})" fill="{BLUE}">{QUEUE_AXIS}</text>"#,
        LEFT - 44.0,
        LEFT - 44.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{mid:.1}" text-anchor="middle" transform="rotate(90 {:.1} {mid:.1})" fill="{ORANGE}">{REPLICAS_AXIS}</text>"#,
        PLOT_RIGHT + 36.0,
        PLOT_RIGHT + 36.0
    );

    // The time axis.
    let ticks = (time_max / time_step).round() as i64;
    for i in 0..=ticks {
        let t = time_step * i as f64;
        let xx = x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{plot_bottom:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#333"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" font-size="{TICK_FONT}">{}</text>"##,
            plot_bottom + 5.0,
            plot_bottom + 18.0,
            number(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{TIME_AXIS}</text>"#,
        (LEFT + PLOT_RIGHT) / 2.0,
        plot_bottom + 36.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{plot_top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        PLOT_RIGHT - LEFT,
        plot_bottom - plot_top
    );

    // The data: the queue as a line (broken where it could not be read), the replicas as steps.
    let mut segments: Vec<Vec<String>> = vec![Vec::new()];
    for p in points {
        match p.queue.filter(|q| q.is_finite()) {
            Some(q) => {
                let point = format!("{:.1},{:.1}", x(p.at), y(q, queue_max));
                match segments.last_mut() {
                    Some(segment) => segment.push(point),
                    None => segments.push(vec![point]),
                }
            }
            None => segments.push(Vec::new()),
        }
    }
    for segment in segments.iter().filter(|s| !s.is_empty()) {
        let _ = writeln!(
            out,
            r#"<polyline class="queue" fill="none" stroke="{BLUE}" stroke-width="2.5" stroke-linejoin="round" points="{}"/>"#,
            segment.join(" ")
        );
    }
    let mut steps = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let yy = y(p.replicas as f64, replicas_max);
        if i > 0 {
            let before = y(points[i - 1].replicas as f64, replicas_max);
            steps.push(format!("{:.1},{before:.1}", x(p.at)));
        }
        steps.push(format!("{:.1},{yy:.1}", x(p.at)));
    }
    let _ = writeln!(
        out,
        r#"<polyline class="replicas" fill="none" stroke="{ORANGE}" stroke-width="2.5" stroke-linejoin="round" points="{}"/>"#,
        steps.join(" ")
    );

    // The markers over the data, their labels in the strip.
    for (at, activated, label, anchor_x, anchor, row) in placed {
        let (class, color) = if activated {
            ("activated", GREEN)
        } else {
            ("deactivated", RED)
        };
        let mx = x(at);
        let label_y = plot_top + ROW_H * (row + 2) as f64 - 3.0;
        let _ = writeln!(
            out,
            r#"<line class="marker {class}" data-worker="{name}" x1="{mx:.1}" y1="{:.1}" x2="{mx:.1}" y2="{plot_bottom:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="5,3"/>"#,
            label_y - 11.0
        );
        let _ = writeln!(
            out,
            r#"<text class="marker-label" x="{anchor_x:.1}" y="{label_y:.1}" text-anchor="{anchor}" font-size="{TICK_FONT}" font-weight="bold" fill="{color}">{label}</text>"#
        );
    }
    let _ = writeln!(out, "</g>");
    plot_bottom + PANEL_FOOT
}

/// The shading of a phase.
fn phase_fill(phase: &str) -> &'static str {
    match phase {
        "burst" => "#fff1c2",
        "drain" => "#dff0d8",
        _ => "#f3f3f3",
    }
}

/// The smallest of 1, 2, 5 times a power of ten that is at least `raw`, and at least `least`.
fn nice_step(raw: f64, least: f64) -> f64 {
    if !raw.is_finite() || raw <= least {
        return least;
    }
    let magnitude = 10_f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
        .max(least)
}

/// A tick's number: no decimals when it is whole.
fn number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// About how wide a text is drawn in DejaVu Sans (the widest of the usual sans fonts), a little
/// more for safety.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.58
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(9.0, 1.0), 10.0);
        assert_eq!(nice_step(8.0, 1.0), 10.0);
        assert_eq!(nice_step(30.0, 1.0), 50.0);
        assert_eq!(nice_step(0.2, 1.0), 1.0);
        assert_eq!(nice_step(1.6, 1.0), 2.0);
        assert_eq!(nice_step(20.0, 1.0), 20.0);
    }

    /// What the demo sees, a sample a second: idle for 10 s, the burst (`queue_peak` items),
    /// ebb's 0 -> 1 about 2 s later, the HPA up to `peak`, the drain from 40 s at `rate` items a
    /// second, the HPA down to 1 as the queue empties and ebb's 1 -> 0 15 s after that.
    fn worker(queue_peak: f64, rate: f64, peak: i64) -> (Vec<Point>, f64) {
        let mut points = Vec::new();
        let mut queue: f64 = 0.0;
        let mut replicas = 0;
        let mut empty_at = None;
        for i in 0..=90 {
            let at = i as f64 + 0.3;
            if i == 10 {
                queue = queue_peak;
            }
            if i >= 40 {
                queue = (queue - rate).max(0.0);
                if queue == 0.0 && empty_at.is_none() {
                    empty_at = Some(at);
                }
            }
            replicas = match (i, empty_at) {
                (0..=11, _) => 0,
                (12..=13, _) => 1,
                (_, None) => ((queue / 5.0).ceil() as i64).clamp(1, peak),
                (_, Some(e)) if at < e + 2.0 => replicas,
                (_, Some(e)) if at < e + 17.0 => 1,
                _ => 0,
            };
            // ebb's reading lags the list by up to its 2 s polling interval.
            let read = if i % 2 == 0 {
                Some(queue)
            } else {
                points.last().and_then(|p: &Point| p.queue)
            };
            points.push(Point {
                at,
                queue: read.or(Some(0.0)),
                replicas,
            });
        }
        let drained = points
            .iter()
            .find(|p| p.at > 40.0 && p.queue == Some(0.0))
            .map(|p| p.at)
            .unwrap_or(90.0);
        (points, drained)
    }

    /// The chart of a realistic run, rendered at 1,000 px wide by rsvg-convert: it renders, and
    /// it has its axes, legend, phases and each worker's activation and deactivation.
    #[test]
    fn demo_chart_renders_at_1000_px_with_axes_legend_phases_and_markers() {
        xtask::cluster::packages::ensure_programs(&[(
            xtask::cluster::packages::RSVG_CONVERT,
            "librsvg2-bin",
        )])
        .expect("installing rsvg-convert (librsvg2-bin)");
        let (redis, redis_drained) = worker(40.0, 3.0, 8);
        let (rabbit, rabbit_drained) = worker(30.0, 2.0, 6);
        let series = [
            Series {
                name: "redis-worker",
                points: redis,
            },
            Series {
                name: "rabbitmq-worker",
                points: rabbit,
            },
        ];
        let phases = Phases {
            burst_at: 10.3,
            drain_at: Some(40.3),
            drained_at: Some(redis_drained.max(rabbit_drained)),
        };
        let chart = svg(&series, &phases);

        let dir = xtask::workspace_root().join("target/demo-chart-test");
        std::fs::create_dir_all(&dir).unwrap();
        let svg_path = dir.join("demo.svg");
        let png_path = dir.join("demo.png");
        std::fs::write(&svg_path, &chart).unwrap();
        let _ = std::fs::remove_file(&png_path);
        let out = Command::new(xtask::cluster::packages::RSVG_CONVERT)
            // At the SVG's own size: the PNG's width is the chart's, not one asked for.
            .args(["--format", "png", "--output"])
            .arg(&png_path)
            .arg(&svg_path)
            .output()
            .expect("running rsvg-convert");
        assert!(
            out.status.success(),
            "rsvg-convert: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let png = std::fs::read(&png_path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert_eq!(width, 1000, "the PNG's width");

        for text in [
            TIME_AXIS,
            QUEUE_AXIS,
            REPLICAS_AXIS,
            &escape(LEGEND_QUEUE),
            &escape(LEGEND_REPLICAS),
            &escape(LEGEND_ACTIVATED),
            &escape(LEGEND_DEACTIVATED),
        ] {
            assert!(chart.contains(&format!(">{text}<")), "{text} missing");
        }
        for s in &series {
            let panel = chart
                .split(r#"<g class="panel""#)
                .find(|p| p.starts_with(&format!(r#" data-worker="{}""#, s.name)))
                .expect("a panel per worker");
            // Both idle bands, the burst and the drain are named in each panel.
            assert_eq!(panel.matches(r#"class="phase-label""#).count(), 4);
            for (phase, times) in [("idle", 2), ("burst", 1), ("drain", 1)] {
                assert_eq!(
                    panel.matches(&format!(">{phase}</text>")).count(),
                    times,
                    "{}: phase {phase} labelled {times} times",
                    s.name
                );
            }
            for class in ["activated", "deactivated"] {
                assert_eq!(
                    panel
                        .matches(&format!(
                            r#"class="marker {class}" data-worker="{}""#,
                            s.name
                        ))
                        .count(),
                    1,
                    "{}: one {class} marker",
                    s.name
                );
                assert!(panel.contains(&format!(">{class} at ")), "{class} label");
            }
        }
    }
}
