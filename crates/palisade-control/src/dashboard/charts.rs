//! Charts as inline SVG, drawn on the server: no script, no external request, readable by a
//! screen reader (each chart has a title and a summary) and sharp at any size.

use std::fmt::Write;

/// One line (or band) of a chart.
pub struct Line<'a> {
    pub name: &'a str,
    /// A CSS class giving its colour (`c1` ... `c6`, `ok`, `warn`, `bad`).
    pub class: &'a str,
    pub values: Vec<f64>,
}

const W: f64 = 640.0;
const H: f64 = 180.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round number at or above `v`, for the top of an axis.
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
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `HH:MM` (UTC) of Unix seconds.
fn clock(t: u64) -> String {
    let palisade_config::time::Civil(_, _, _, h, m, ..) = palisade_config::time::civil(t);
    format!("{h:02}:{m:02}")
}

/// A time series chart: lines over `times` (Unix seconds), or stacked bands when `stacked`.
pub fn time_chart(title: &str, unit: &str, times: &[u64], lines: &[Line<'_>], stacked: bool) -> String {
    let n = times.len();
    let mut tops = vec![0.0f64; n];
    let mut max = 0.0f64;
    for l in lines {
        for (i, v) in l.values.iter().enumerate() {
            if stacked {
                if let Some(t) = tops.get_mut(i) {
                    *t += v;
                    max = max.max(*t);
                }
            } else {
                max = max.max(*v);
            }
        }
    }
    let ymax = nice_max(max);
    let x = |i: usize| LEFT + (W - LEFT - 4.0) * if n > 1 { i as f64 / (n - 1) as f64 } else { 0.5 };
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v / ymax).clamp(0.0, 1.0));
    let latest: Vec<String> = lines
        .iter()
        .map(|l| format!("{} {} {unit}", l.name, fmt_num(l.values.last().copied().unwrap_or(0.0))))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}: latest {}\">",
        esc(title),
        esc(title),
        esc(&latest.join(", "))
    );
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - 4.0,
            LEFT - 6.0,
            y(v) + 4.0,
            fmt_num(v),
            y = y(v)
        );
    }
    if n > 0 {
        for (k, anchor) in [(0, "start"), (n / 2, "middle"), (n - 1, "end")] {
            if let Some(t) = times.get(k) {
                let _ = write!(
                    svg,
                    "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
                    x(k),
                    H - 6.0,
                    clock(*t)
                );
            }
        }
    }
    let mut base = vec![0.0f64; n];
    for l in lines {
        if n == 0 {
            break;
        }
        let mut top = Vec::with_capacity(n);
        for (i, b) in base.iter().enumerate() {
            let v = l.values.get(i).copied().unwrap_or(0.0);
            top.push(if stacked { b + v } else { v });
        }
        let points: Vec<String> = top.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        if stacked {
            let under: Vec<String> =
                base.iter().enumerate().rev().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
            let _ = write!(
                svg,
                "<polygon class=\"band {}\" points=\"{} {}\"><title>{}</title></polygon>",
                l.class,
                points.join(" "),
                under.join(" "),
                esc(l.name)
            );
            base = top;
        } else {
            let _ = write!(
                svg,
                "<polyline class=\"line {}\" points=\"{}\"><title>{}</title></polyline>",
                l.class,
                points.join(" "),
                esc(l.name)
            );
        }
    }
    svg.push_str("</svg><ul class=\"legend\">");
    for (l, text) in lines.iter().zip(&latest) {
        let _ = write!(svg, "<li><span class=\"swatch {}\"></span>{}</li>", l.class, esc(text));
    }
    svg.push_str("</ul></figure>");
    svg
}

/// A bar chart of labelled values.
pub fn bars(title: &str, labels: &[String], values: &[u64], class: &str) -> String {
    let max = nice_max(values.iter().copied().max().unwrap_or(0) as f64);
    let n = values.len().max(1) as f64;
    let slot = (W - LEFT - 4.0) / n;
    let mut svg = String::new();
    let total: u64 = values.iter().sum();
    let _ = write!(
        svg,
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}: {} in all\">",
        esc(title),
        esc(title),
        total
    );
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let y = TOP + (H - TOP - BOTTOM) * (1.0 - v / max);
        let _ = write!(svg, "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", W - 4.0, LEFT - 6.0, y + 4.0, fmt_num(v));
    }
    for (i, (label, v)) in labels.iter().zip(values).enumerate() {
        let h = (H - TOP - BOTTOM) * (*v as f64 / max);
        let x = LEFT + slot * i as f64;
        let _ = write!(
            svg,
            "<rect class=\"bar {class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{}: {v}</title></rect><text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + slot * 0.15,
            H - BOTTOM - h,
            slot * 0.7,
            esc(label),
            x + slot / 2.0,
            H - 6.0,
            esc(label)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_draw_and_escape() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        let svg = time_chart(
            "Requests <per s>",
            "/s",
            &[0, 10, 20],
            &[Line { name: "2xx", class: "ok", values: vec![1.0, 2.0, 3.0] }],
            true,
        );
        assert!(svg.contains("Requests &lt;per s&gt;"));
        assert!(svg.contains("<polygon class=\"band ok\""));
        assert!(svg.contains("2xx 3 /s"));
        let empty = time_chart("x", "", &[], &[], false);
        assert!(empty.contains("<svg"));
        let b = bars("Bot scores", &["1".into(), "2".into()], &[3, 0], "c1");
        assert!(b.contains("<title>1: 3</title>"));
    }
}
