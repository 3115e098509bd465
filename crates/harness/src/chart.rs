//! Grouped bar charts as SVG, for the benchmarks' figures (`compare` writes two beside its
//! JSON; docs/benchmarks.md shows them).
//!
//! Written by hand rather than with a plotting crate: a plotting library would be a
//! dev-dependency of the test and bench targets alike, compiled into every test build of
//! the test command for two static charts of a few rectangles and labels each.

/// One group of bars (a scenario) with a value per series (a system); `None`: no value.
#[derive(Clone, Debug)]
pub struct Group {
    /// The group's label under its bars.
    pub label: String,
    /// One value per series, in the order of [`Chart::series`].
    pub values: Vec<Option<f64>>,
}

/// A grouped bar chart.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title above the chart.
    pub title: String,
    /// The value axis' label (with its unit).
    pub axis: String,
    /// The series' names (the legend), one colour each.
    pub series: Vec<String>,
    /// The groups, left to right.
    pub groups: Vec<Group>,
    /// A log-10 value axis (for figures spanning orders of magnitude); linear from 0 otherwise.
    pub log: bool,
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// `text` escaped for XML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value as a tick label: 1, 10, 100, 1k, 10k…
fn tick_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn svg(&self) -> String {
        let (left, right, top, bottom) = (70.0, 20.0, 50.0, 110.0);
        let bar_w = 14.0;
        let group_gap = 24.0;
        let n_series = self.series.len().max(1) as f64;
        let group_w = bar_w * n_series + group_gap;
        let plot_w = (group_w * self.groups.len().max(1) as f64).max(300.0);
        let plot_h = 300.0;
        let legend_h = 18.0 * self.series.len() as f64;
        let width = left + plot_w + right;
        let height = top + plot_h + bottom + legend_h;
        let values: Vec<f64> = self
            .groups
            .iter()
            .flat_map(|g| g.values.iter().flatten().copied())
            .filter(|v| v.is_finite())
            .collect();
        let max = values.iter().copied().fold(0.0_f64, f64::max);
        // The axis: decades for a log scale, five steps for a linear one.
        let (lo, hi, ticks): (f64, f64, Vec<f64>) = if self.log {
            let positive = values.iter().copied().filter(|v| *v > 0.0);
            let min = positive.fold(f64::INFINITY, f64::min);
            let lo = if min.is_finite() {
                10f64.powf(min.log10().floor())
            } else {
                1.0
            };
            let hi = 10f64.powf(max.max(lo * 10.0).log10().ceil());
            let mut t = Vec::new();
            let mut v = lo;
            while v <= hi * 1.0001 {
                t.push(v);
                v *= 10.0;
            }
            (lo, hi, t)
        } else {
            let step = nice_step(max / 5.0);
            let hi = (max / step).ceil().max(1.0) * step;
            let t = (0..=((hi / step).round() as usize))
                .map(|i| i as f64 * step)
                .collect();
            (0.0, hi, t)
        };
        let y = |v: f64| -> f64 {
            let frac = if self.log {
                if v <= 0.0 {
                    0.0
                } else {
                    (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
                }
            } else {
                v / hi
            };
            top + plot_h - frac.clamp(0.0, 1.0) * plot_h
        };
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{:.0}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
            width / 2.0,
            esc(&self.title)
        );
        for t in &ticks {
            let ty = y(*t);
            out.push_str(&format!(
                "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"#ddd\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                left + plot_w,
                left - 6.0,
                ty + 4.0,
                tick_label(*t)
            ));
        }
        out.push_str(&format!(
            "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
            top + plot_h / 2.0,
            esc(&self.axis)
        ));
        for (gi, g) in self.groups.iter().enumerate() {
            let gx = left + group_gap / 2.0 + gi as f64 * group_w;
            for (si, v) in g.values.iter().enumerate() {
                let Some(v) = v.filter(|v| v.is_finite()) else {
                    continue;
                };
                let x = gx + si as f64 * bar_w;
                let top_y = y(v);
                out.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}: {v}</title></rect>\n",
                    bar_w - 1.0,
                    (top + plot_h - top_y).max(0.0),
                    COLOURS[si % COLOURS.len()],
                    esc(&g.label),
                    esc(self.series.get(si).map_or("", String::as_str)),
                ));
            }
            let cx = gx + bar_w * n_series / 2.0;
            out.push_str(&format!(
                "<text transform=\"translate({cx:.1} {:.1}) rotate(-30)\" text-anchor=\"end\">{}</text>\n",
                top + plot_h + 14.0,
                esc(&g.label)
            ));
        }
        out.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
            left + plot_w,
            top + plot_h,
            top + plot_h
        ));
        for (si, s) in self.series.iter().enumerate() {
            let ly = top + plot_h + bottom + 18.0 * si as f64;
            out.push_str(&format!(
                "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                ly - 10.0,
                COLOURS[si % COLOURS.len()],
                left + 18.0,
                ly,
                esc(s)
            ));
        }
        out.push_str("</svg>\n");
        out
    }
}

/// A round step (1, 2 or 5 times a power of ten) at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(log: bool) -> Chart {
        Chart {
            title: "Failover <time>".into(),
            axis: "ms".into(),
            series: vec!["ours".into(), "sentinel".into()],
            groups: vec![
                Group {
                    label: "redis crash".into(),
                    values: vec![Some(150.0), Some(5200.0)],
                },
                Group {
                    label: "api cut".into(),
                    values: vec![Some(12.0), None],
                },
            ],
            log,
        }
    }

    /// The bars' heights, in drawing order.
    fn heights(svg: &str) -> Vec<f64> {
        svg.lines()
            .filter(|l| l.starts_with("<rect x=") && l.contains("<title>"))
            .map(|l| {
                let h = l.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn bars_scale_on_a_log_axis_and_missing_values_draw_nothing() {
        let svg = chart(true).svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Failover &lt;time&gt;"), "escaped title");
        let h = heights(&svg);
        assert_eq!(h.len(), 3, "one bar per value, none for the missing one");
        // Log axis from 10 to 10k over 300 px: 100 px per decade.
        assert!((h[0] - (150f64.log10() - 1.0) * 100.0).abs() < 0.2, "{h:?}");
        assert!(
            (h[1] - (5200f64.log10() - 1.0) * 100.0).abs() < 0.2,
            "{h:?}"
        );
        assert!(svg.contains(">10k</text>") && svg.contains(">10</text>"));
    }

    #[test]
    fn a_linear_axis_starts_at_zero_with_round_steps() {
        let svg = chart(false).svg();
        let h = heights(&svg);
        // Up to 5200: steps of 2000, axis to 6000.
        assert!((h[1] - 5200.0 / 6000.0 * 300.0).abs() < 0.2, "{h:?}");
        assert!(svg.contains(">0</text>") && svg.contains(">6k</text>"));
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(1040.0), 2000.0);
        assert_eq!(nice_step(3.0), 5.0);
    }
}
