//! A plain SVG line chart, written by hand: stacked panels sharing a time
//! axis, shaded phase bands, a legend per panel.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// (x seconds, y); `None` leaves a gap.
    pub points: Vec<(f64, Option<f64>)>,
}

pub struct Panel {
    pub title: String,
    pub unit: String,
    pub log_y: bool,
    pub series: Vec<Series>,
}

pub struct Band {
    pub start: f64,
    pub end: f64,
    pub label: String,
}

pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

const W: f64 = 1200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const PANEL_H: f64 = 210.0;
const GAP: f64 = 60.0;
const TOP: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A round upper bound for a linear axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn render(title: &str, subtitle: &str, panels: &[Panel], bands: &[Band], x_max: f64) -> String {
    let plot_w = W - LEFT - RIGHT;
    let h = TOP + panels.len() as f64 * (PANEL_H + GAP) + 20.0;
    let x_max = x_max.max(1.0);
    let sx = |x: f64| LEFT + (x / x_max).clamp(0.0, 1.0) * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(s, r##"<text x="{LEFT}" y="40" fill="#555">{}</text>"##, esc(subtitle));
    for (pi, p) in panels.iter().enumerate() {
        let top = TOP + pi as f64 * (PANEL_H + GAP) + 20.0;
        let bottom = top + PANEL_H;
        // Phase bands.
        for (bi, b) in bands.iter().enumerate() {
            let fill = if bi % 2 == 0 { "#f2f2f2" } else { "#e6eef7" };
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{PANEL_H}" fill="{fill}"/>"#,
                sx(b.start),
                (sx(b.end) - sx(b.start)).max(0.5)
            );
            if pi == 0 {
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#444">{}</text>"##,
                    sx(b.start) + 2.0,
                    top + 11.0 + (bi % 2) as f64 * 11.0,
                    esc(&b.label)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{} ({})</text>"#,
            top - 6.0,
            esc(&p.title),
            esc(&p.unit)
        );
        let ys: Vec<f64> = p
            .series
            .iter()
            .flat_map(|se| se.points.iter().filter_map(|(_, y)| *y))
            .filter(|y| y.is_finite())
            .collect();
        let (lo, hi) = if p.log_y {
            let pos: Vec<f64> = ys.iter().copied().filter(|y| *y > 0.0).collect();
            let mn = pos.iter().copied().fold(f64::INFINITY, f64::min);
            let mx = pos.iter().copied().fold(0.0, f64::max);
            if pos.is_empty() {
                (1.0, 10.0)
            } else {
                let lo = 10f64.powf(mn.log10().floor());
                let hi = 10f64.powf(mx.log10().ceil()).max(lo * 10.0);
                (lo, hi)
            }
        } else {
            (0.0, nice_max(ys.iter().copied().fold(0.0, f64::max)))
        };
        let sy = |y: f64| -> f64 {
            let f = if p.log_y {
                (y.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())
            } else {
                (y - lo) / (hi - lo)
            };
            bottom - f.clamp(0.0, 1.0) * PANEL_H
        };
        // Grid and y labels.
        let ticks: Vec<f64> = if p.log_y {
            let mut t = Vec::new();
            let mut v = lo;
            while v <= hi * 1.0001 {
                t.push(v);
                v *= 10.0;
            }
            t
        } else {
            (0..=5).map(|i| hi * f64::from(i) / 5.0).collect()
        };
        for t in ticks {
            let y = sy(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ccc" stroke-width="0.6"/>"##,
                LEFT + plot_w
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"#,
                LEFT - 5.0,
                y + 3.5,
                fmt_num(t)
            );
        }
        // X axis ticks every 10 / 30 / 60 s.
        let step = if x_max > 600.0 {
            60.0
        } else if x_max > 200.0 {
            30.0
        } else {
            10.0
        };
        let mut x = 0.0;
        while x <= x_max {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{bottom:.1}" x2="{0:.1}" y2="{1:.1}" stroke="#999"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" font-size="10">{3}</text>"##,
                sx(x),
                bottom + 4.0,
                bottom + 15.0,
                fmt_num(x)
            );
            x += step;
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#333"/>"##
        );
        if pi + 1 == panels.len() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the first order</text>"#,
                LEFT + plot_w / 2.0,
                bottom + 32.0
            );
        }
        // Series.
        for (si, se) in p.series.iter().enumerate() {
            let mut segs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for (x, y) in &se.points {
                match y {
                    Some(y) if y.is_finite() && (!p.log_y || *y > 0.0) => {
                        if let Some(seg) = segs.last_mut() {
                            seg.push((sx(*x), sy(*y)));
                        }
                    }
                    _ => segs.push(Vec::new()),
                }
            }
            for seg in segs.iter().filter(|g| !g.is_empty()) {
                if seg.len() == 1 {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{}"/>"#,
                        seg[0].0, seg[0].1, se.color
                    );
                    continue;
                }
                let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.4" points="{}"/>"#,
                    se.color,
                    pts.join(" ")
                );
            }
            let ly = top + 12.0 + si as f64 * 16.0;
            let lx = LEFT + plot_w + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                ly - 4.0,
                lx + 18.0,
                ly - 4.0,
                se.color,
                lx + 24.0,
                ly,
                esc(&se.name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_chart() {
        let panel = Panel {
            title: "latency <p99>".into(),
            unit: "ms".into(),
            log_y: true,
            series: vec![Series {
                name: "p99".into(),
                color: PALETTE[0],
                points: vec![(0.0, Some(5.0)), (1.0, None), (2.0, Some(500.0)), (3.0, Some(50.0))],
            }],
        };
        let band = Band {
            start: 0.0,
            end: 2.0,
            label: "sustained".into(),
        };
        let svg = render("t", "s", &[panel], &[band], 3.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("&lt;p99&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(nice_max(73.0), 100.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
