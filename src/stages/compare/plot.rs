//! `curves.svg` of `compare`: one metric's curve per group, the mean as a line and the
//! bootstrap interval as a band around it, drawn with plotters.

use std::path::Path;

use plotters::prelude::*;

use super::Point;

/// Draws `metric` for each `(group, points)` into the SVG file `to`.
pub(super) fn curves(to: &Path, metric: &str, groups: &[(&str, &[Point])], confidence: f64) -> Result<(), String> {
    let points = groups.iter().flat_map(|(_, p)| p.iter());
    let (mut lo, mut hi, mut last) = (f64::INFINITY, f64::NEG_INFINITY, 1u64);
    for p in points {
        lo = lo.min(p.summary.ci_low);
        hi = hi.max(p.summary.ci_high);
        last = last.max(p.step);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let root = SVGBackend::new(to, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let caption = format!("{metric}: mean and {}% interval over the runs of each group", (confidence * 100.0).round());
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last as f64, (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("step").y_desc(metric).draw().map_err(|e| e.to_string())?;
    for (i, (name, points)) in groups.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let upper = points.iter().map(|p| (p.step as f64, p.summary.ci_high));
        let lower = points.iter().rev().map(|p| (p.step as f64, p.summary.ci_low));
        chart
            .draw_series(std::iter::once(Polygon::new(upper.chain(lower).collect::<Vec<_>>(), color.mix(0.2))))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.step as f64, p.summary.mean)), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
