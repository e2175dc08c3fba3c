//! `flow show --plot`: the loss (train, val, and val per source) and learning-rate curves of a
//! training artifact's `metrics.jsonl`, drawn as SVG with plotters.

use std::path::Path;

use plotters::prelude::*;

use crate::ml::train::Row;

pub(super) fn training_curves(metrics: &Path, to: &Path) -> Result<(), String> {
    let text = fs_err::read_to_string(metrics).map_err(|e| format!("this artifact has no training metrics: {e}"))?;
    let rows: Vec<Row> = text
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("`{}`: {e}", metrics.display())))
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Err(format!("`{}` is empty", metrics.display()));
    }
    if to.extension().is_none_or(|e| e != "svg") {
        return Err("plots are written as SVG: give a file name ending in `.svg`".into());
    }
    let root = SVGBackend::new(to, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(420);
    let last = rows.last().expect("non-empty").step as f64;
    let sources: std::collections::BTreeSet<&str> =
        rows.iter().flat_map(|r| r.val_sources.keys().map(String::as_str)).collect();
    let losses = rows
        .iter()
        .map(|r| r.loss)
        .chain(rows.iter().filter_map(|r| r.val_loss))
        .chain(rows.iter().flat_map(|r| r.val_sources.values().copied()));
    let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let mut chart = ChartBuilder::on(&top)
        .caption("loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..last, (lo * 0.95)..(hi * 1.05))
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("step").draw().map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(rows.iter().map(|r| (r.step as f64, r.loss)), &BLUE))
        .map_err(|e| e.to_string())?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(rows.iter().filter_map(|r| r.val_loss.map(|v| (r.step as f64, v))), &RED))
        .map_err(|e| e.to_string())?
        .label("val")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    // One curve per source of the data and per extra validation set: forgetting shows here.
    for (i, key) in sources.iter().enumerate() {
        let color = Palette99::pick(i + 2).to_rgba();
        let points = rows.iter().filter_map(|r| r.val_sources.get(*key).map(|v| (r.step as f64, *v)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))
            .map_err(|e| e.to_string())?
            .label(key.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;
    let max_lr = rows.iter().map(|r| r.lr).fold(0.0, f64::max).max(1e-12);
    let mut lr = ChartBuilder::on(&bottom)
        .caption("learning rate", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..last, 0f64..max_lr * 1.05)
        .map_err(|e| e.to_string())?;
    lr.configure_mesh().x_desc("step").draw().map_err(|e| e.to_string())?;
    lr.draw_series(LineSeries::new(rows.iter().map(|r| (r.step as f64, r.lr)), &GREEN)).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
