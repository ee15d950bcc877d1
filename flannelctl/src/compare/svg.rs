//! The picture: latency percentile plots (UDP and TCP request/response,
//! log-scaled latency across, percentiles up on a "nines" scale so the tail
//! gets as much room as the median) with one line per datapath, and grouped
//! TCP throughput bars (1 and N streams). Hand-written SVG: a plotting
//! dependency would outweigh these few primitives.

use std::fmt::Write;

use crate::probe::hist::Histogram;

use super::datapaths;

const W: f64 = 1400.0;
const H: f64 = 610.0;
const TOP: f64 = 100.0;
const BOTTOM: f64 = 460.0;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
const PALETTE: &[&str] = &[
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d",
];
/// The percentile axis ends at 99.9 % (three nines).
const NINES: f64 = 3.0;

/// One datapath as drawn.
pub struct Series<'a> {
    pub name: &'a str,
    /// Why it did not run; then only its legend entry and an empty slot.
    pub unavailable: Option<&'a str>,
    pub udp: Option<&'a Histogram>,
    pub tcp: Option<&'a Histogram>,
    pub tcp_1: f64,
    pub tcp_n: f64,
    /// Host-wide busy CPU-µs per UDP request, when /proc/stat was read.
    pub cpu_per_req: Option<f64>,
}

pub struct Figure<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
    pub streams: u32,
    pub series: &'a [Series<'a>],
}

pub fn colour(name: &str) -> &'static str {
    let i = datapaths::ALL.iter().position(|d| *d == name).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(out: &mut String, x: f64, y: f64, size: f64, anchor: &str, extra: &str, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}" {extra}>{}</text>"#,
        esc(s)
    );
}

fn line(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
    let _ = writeln!(
        out,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
    );
}

/// Latency in µs with thousands grouped by a thin space.
fn us_label(v: f64) -> String {
    if v < 1.0 {
        return format!("{v}");
    }
    let s = format!("{v:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// 1, 1.5, 2, 2.5 or 5 times a power of ten, at least `v`.
pub fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.5, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v * (1.0 - 1e-9) {
            return m * p;
        }
    }
    10.0 * p
}

/// The decades [lo, hi] (log10 of µs) that hold every series from p0 to
/// p99.9.
fn decades(series: &[Series]) -> (f64, f64) {
    let hists = series.iter().flat_map(|s| [s.udp, s.tcp]).flatten();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for h in hists {
        if let (Some(a), Some(b)) = (h.percentile(0.0), h.percentile(99.9)) {
            lo = lo.min((a as f64 / 1000.0).max(0.1));
            hi = hi.max((b as f64 / 1000.0).max(0.1));
        }
    }
    if !lo.is_finite() {
        return (0.0, 3.0);
    }
    let (l, h) = (lo.log10().floor(), hi.log10().ceil());
    (l, if h > l { h } else { l + 1.0 })
}

struct Panel {
    x0: f64,
    x1: f64,
}

fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

fn latency_panel(
    out: &mut String,
    p: &Panel,
    title: &str,
    series: &[Series],
    pick: for<'b> fn(&Series<'b>) -> Option<&'b Histogram>,
    (lo, hi): (f64, f64),
) {
    let (w, h) = (p.x1 - p.x0, BOTTOM - TOP);
    let x = |us: f64| p.x0 + (us.max(10f64.powf(lo)).log10() - lo) / (hi - lo) * w;
    let y = |q: f64| BOTTOM - nines(q).min(NINES) / NINES * h;
    text(
        out,
        p.x0 + w / 2.0,
        TOP - 14.0,
        15.0,
        "middle",
        r#"font-weight="bold""#,
        title,
    );
    // Grid and x labels: decades labelled, 2x and 5x faint.
    let mut d = lo;
    while d <= hi + 1e-9 {
        let v = 10f64.powf(d);
        line(
            out,
            x(v),
            TOP,
            x(v),
            BOTTOM,
            r##"stroke="#bbb" stroke-width="1""##,
        );
        text(out, x(v), BOTTOM + 18.0, 12.0, "middle", "", &us_label(v));
        for m in [2.0, 5.0] {
            if d + 1.0 <= hi + 1e-9 {
                let xv = x(m * v);
                line(
                    out,
                    xv,
                    TOP,
                    xv,
                    BOTTOM,
                    r##"stroke="#e4e4e4" stroke-width="1""##,
                );
            }
        }
        d += 1.0;
    }
    for (q, label) in [
        (0.0, "0"),
        (0.5, "50"),
        (0.9, "90"),
        (0.99, "99"),
        (0.999, "99.9"),
    ] {
        line(
            out,
            p.x0,
            y(q),
            p.x1,
            y(q),
            r##"stroke="#bbb" stroke-width="1""##,
        );
        text(out, p.x0 - 8.0, y(q) + 4.0, 12.0, "end", "", label);
    }
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{TOP}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#444"/>"##,
        p.x0
    );
    text(
        out,
        p.x0 + w / 2.0,
        BOTTOM + 40.0,
        13.0,
        "middle",
        "",
        "latency (µs, log scale)",
    );
    let (cx, cy) = (p.x0 - 45.0, TOP + h / 2.0);
    text(
        out,
        cx,
        cy,
        13.0,
        "middle",
        &format!(r#"transform="rotate(-90 {cx:.1} {cy:.1})""#),
        "percentile (%)",
    );
    for s in series {
        let Some(hist) = pick(s).filter(|h| h.count > 0) else {
            continue;
        };
        let mut pts = String::new();
        let steps = 240;
        for i in 0..=steps {
            let n = NINES * f64::from(i) / f64::from(steps);
            let q = 1.0 - 10f64.powf(-n);
            let v = hist.percentile(q * 100.0).unwrap_or(0) as f64 / 1000.0;
            let _ = write!(pts, "{:.1},{:.1} ", x(v.min(10f64.powf(hi))), y(q));
        }
        let width = if s.name == datapaths::BASELINE {
            3.0
        } else {
            2.2
        };
        let _ = writeln!(
            out,
            r#"<polyline class="series" data-datapath="{}" points="{}" fill="none" stroke="{}" stroke-width="{width}" stroke-linejoin="round"/>"#,
            esc(s.name),
            pts.trim_end(),
            colour(s.name)
        );
    }
}

fn bars_panel(out: &mut String, p: &Panel, f: &Figure) {
    let (w, h) = (p.x1 - p.x0, BOTTOM - TOP);
    let top = nice_ceil(
        f.series
            .iter()
            .filter(|s| s.unavailable.is_none())
            .flat_map(|s| [s.tcp_1, s.tcp_n])
            .fold(0.0, f64::max),
    );
    let y = |v: f64| BOTTOM - v / top * h;
    text(
        out,
        p.x0 + w / 2.0,
        TOP - 14.0,
        15.0,
        "middle",
        r#"font-weight="bold""#,
        "TCP throughput",
    );
    for i in 0..=5 {
        let v = top * f64::from(i) / 5.0;
        line(
            out,
            p.x0,
            y(v),
            p.x1,
            y(v),
            r##"stroke="#ddd" stroke-width="1""##,
        );
        let label = format!("{v:.3}");
        let label = label.trim_end_matches('0').trim_end_matches('.');
        text(out, p.x0 - 8.0, y(v) + 4.0, 12.0, "end", "", label);
    }
    line(out, p.x0, BOTTOM, p.x1, BOTTOM, r##"stroke="#444""##);
    line(out, p.x0, TOP, p.x0, BOTTOM, r##"stroke="#444""##);
    let (cx, cy) = (p.x0 - 45.0, TOP + h / 2.0);
    text(
        out,
        cx,
        cy,
        13.0,
        "middle",
        &format!(r#"transform="rotate(-90 {cx:.1} {cy:.1})""#),
        "Gbit/s",
    );
    // Key: light = 1 stream, solid = N streams.
    let kx = p.x1 - 190.0;
    let _ = writeln!(
        out,
        r##"<rect x="{kx:.1}" y="{:.1}" width="14" height="14" fill="#777" fill-opacity="0.4"/>"##,
        TOP + 8.0
    );
    text(out, kx + 20.0, TOP + 20.0, 12.0, "start", "", "1 stream");
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="14" height="14" fill="#777"/>"##,
        kx + 90.0,
        TOP + 8.0
    );
    text(
        out,
        kx + 110.0,
        TOP + 20.0,
        12.0,
        "start",
        "",
        &format!("{} streams", f.streams),
    );
    let n = f.series.len().max(1) as f64;
    let gw = w / n;
    let bw = (gw * 0.34).min(46.0);
    let rotate = gw < 95.0;
    for (i, s) in f.series.iter().enumerate() {
        let cx = p.x0 + gw * (i as f64 + 0.5);
        let (lx, ly) = (cx, BOTTOM + 18.0);
        let extra = if rotate {
            format!(r#"transform="rotate(-25 {lx:.1} {ly:.1})""#)
        } else {
            String::new()
        };
        text(
            out,
            lx,
            ly,
            12.0,
            if rotate { "end" } else { "middle" },
            &extra,
            s.name,
        );
        if s.unavailable.is_some() {
            text(
                out,
                cx,
                BOTTOM - 8.0,
                11.0,
                "middle",
                r##"fill="#888""##,
                "n/a",
            );
            continue;
        }
        for (k, v) in [(0, s.tcp_1), (1, s.tcp_n)] {
            let bx = if k == 0 { cx - bw - 2.0 } else { cx + 2.0 };
            let opacity = if k == 0 { 0.4 } else { 1.0 };
            let _ = writeln!(
                out,
                r#"<rect class="bar" data-datapath="{}" x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}" fill-opacity="{opacity}"/>"#,
                esc(s.name),
                y(v),
                BOTTOM - y(v),
                colour(s.name)
            );
            text(
                out,
                bx + bw / 2.0,
                y(v) - 4.0,
                11.0,
                "middle",
                "",
                &format!("{v:.2}"),
            );
        }
    }
}

fn legend(out: &mut String, series: &[Series], streams: u32) {
    let short = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    for (i, s) in series.iter().enumerate() {
        let x = 90.0;
        let y = BOTTOM + 80.0 + i as f64 * 22.0;
        let label = match (s.unavailable, s.udp) {
            (Some(why), _) => {
                let mut why = why.to_string();
                if why.chars().count() > 150 {
                    why = why.chars().take(147).collect::<String>() + "...";
                }
                line(
                    out,
                    x,
                    y - 4.0,
                    x + 28.0,
                    y - 4.0,
                    r##"stroke="#aaa" stroke-width="2" stroke-dasharray="4 3""##,
                );
                format!("{}: unavailable: {why}", s.name)
            }
            (None, Some(h)) => {
                line(
                    out,
                    x,
                    y - 4.0,
                    x + 28.0,
                    y - 4.0,
                    &format!(r#"stroke="{}" stroke-width="3""#, colour(s.name)),
                );
                let q = |p| h.percentile(p).unwrap_or(0) as f64 / 1000.0;
                // What the latency costs: a busy-polling datapath can be
                // fast and expensive at once.
                let cpu = s
                    .cpu_per_req
                    .map(|c| format!(" ({} µs CPU/req)", short(c)))
                    .unwrap_or_default();
                format!(
                    "{}: UDP p50 {} µs, p99 {} µs, p99.9 {} µs{cpu}; TCP {:.2} Gbit/s (1 stream), {:.2} Gbit/s ({} streams)",
                    s.name,
                    short(q(50.0)),
                    short(q(99.0)),
                    short(q(99.9)),
                    s.tcp_1,
                    s.tcp_n,
                    streams
                )
            }
            (None, None) => s.name.to_string(),
        };
        text(out, x + 36.0, y, 13.0, "start", "", &label);
    }
}

/// The whole SVG document.
pub fn render(f: &Figure) -> String {
    let mut out = String::new();
    let height = H.max(BOTTOM + 90.0 + f.series.len() as f64 * 22.0);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="{FONT}">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    text(
        &mut out,
        W / 2.0,
        32.0,
        21.0,
        "middle",
        r#"font-weight="bold""#,
        f.title,
    );
    text(
        &mut out,
        W / 2.0,
        56.0,
        13.0,
        "middle",
        r##"fill="#555""##,
        f.subtitle,
    );
    let range = decades(f.series);
    latency_panel(
        &mut out,
        &Panel {
            x0: 90.0,
            x1: 450.0,
        },
        "UDP request/response latency",
        f.series,
        |s| s.udp,
        range,
    );
    latency_panel(
        &mut out,
        &Panel {
            x0: 540.0,
            x1: 900.0,
        },
        "TCP request/response latency",
        f.series,
        |s| s.tcp,
        range,
    );
    bars_panel(
        &mut out,
        &Panel {
            x0: 990.0,
            x1: 1370.0,
        },
        f,
    );
    legend(&mut out, f.series, f.streams);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(scale: u64) -> Histogram {
        let mut h = Histogram::new();
        for v in 1..=2000u64 {
            h.record(20_000 * scale + v * v * scale);
        }
        h
    }

    #[test]
    fn well_formed_with_one_line_per_datapath_and_panel() {
        let (a, b) = (hist(1), hist(2));
        let series = [
            Series {
                name: "host-gw",
                unavailable: None,
                udp: Some(&a),
                tcp: Some(&a),
                tcp_1: 9.5,
                tcp_n: 14.0,
                cpu_per_req: Some(41.3),
            },
            Series {
                name: "vxlan",
                unavailable: None,
                udp: Some(&b),
                tcp: Some(&b),
                tcp_1: 4.0,
                tcp_n: 6.5,
                cpu_per_req: None,
            },
            Series {
                name: "geneve",
                unavailable: Some("no <geneve> module & no luck"),
                udp: None,
                tcp: None,
                tcp_1: 0.0,
                tcp_n: 0.0,
                cpu_per_req: None,
            },
        ];
        let svg = render(&Figure {
            title: "flannel-rs datapaths",
            subtitle: "2026-11-22, kernel 6.18",
            streams: 4,
            series: &series,
        });
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let lines: Vec<_> = root
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .filter_map(|n| n.attribute("data-datapath"))
            .collect();
        assert_eq!(
            lines,
            ["host-gw", "vxlan", "host-gw", "vxlan"],
            "two panels"
        );
        let bars = root
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .count();
        assert_eq!(bars, 4);
        let all_text: String = root
            .descendants()
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join("|");
        assert!(all_text.contains("geneve: unavailable: no <geneve> module & no luck"));
        assert!(all_text.contains("(41.3 µs CPU/req)"), "{all_text}");
        let vxlan = all_text
            .split('|')
            .find(|t| t.starts_with("vxlan: UDP p50"))
            .expect("vxlan legend");
        assert!(!vxlan.contains("CPU/req"), "no figure, no label: {vxlan}");
        assert!(all_text.contains("4 streams") && all_text.contains("latency (µs, log scale)"));
        // Every point is inside the canvas.
        for n in root.descendants().filter(|n| n.has_tag_name("polyline")) {
            for pt in n.attribute("points").unwrap_or_default().split_whitespace() {
                let (x, y) = pt.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(
                    (0.0..=W).contains(&x) && (TOP..=BOTTOM).contains(&y),
                    "{pt}"
                );
            }
        }
    }

    #[test]
    fn scales() {
        assert_eq!(nice_ceil(7.3), 10.0);
        assert_eq!(nice_ceil(1.2), 1.5);
        assert_eq!(nice_ceil(10.43), 15.0);
        assert_eq!(nice_ceil(0.3), 0.5);
        assert_eq!(nice_ceil(20.0), 20.0);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(us_label(10000.0), "10\u{2009}000");
        assert_eq!(us_label(100.0), "100");
        let a = hist(1);
        let s = [Series {
            name: "vxlan",
            unavailable: None,
            udp: Some(&a),
            tcp: None,
            tcp_1: 1.0,
            tcp_n: 1.0,
            cpu_per_req: None,
        }];
        // 20 us to ~4 ms: decades 10 us .. 10 ms.
        assert_eq!(decades(&s), (1.0, 4.0));
        assert_eq!(decades(&[]), (0.0, 3.0));
    }
}
