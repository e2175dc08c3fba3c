//! `flow show --plot`: a stage's loss curves (train, val, and val per source — any scalar it
//! reported whose name holds `loss`) and learning-rate curve, from its [`History`], drawn as
//! SVG with plotters. A built-in training kind and a command speaking the progress protocol are
//! drawn alike.

use std::path::Path;

use plotters::prelude::*;

use crate::exec::history::History;

pub(super) fn training_curves(history: &History, to: &Path) -> Result<(), String> {
    let names: Vec<&str> = history.names().into_iter().filter(|n| n.contains("loss")).collect();
    if names.is_empty() {
        return Err(
            "this stage reported no loss: nothing to plot (docs/protocol.md says how a command reports one)".into()
        );
    }
    if to.extension().is_none_or(|e| e != "svg") {
        return Err("plots are written as SVG: give a file name ending in `.svg`".into());
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = names
        .iter()
        .map(|n| {
            (*n, history.series(n).into_iter().filter(|(_, v)| v.is_finite()).map(|(s, v)| (s as f64, v)).collect())
        })
        .collect();
    let lr: Vec<(f64, f64)> = history.series("lr").into_iter().map(|(s, v)| (s as f64, v)).collect();
    let last = history.steps.keys().next_back().copied().unwrap_or(0).max(1) as f64;
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, v)| *v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let root = SVGBackend::new(to, (900, if lr.is_empty() { 420 } else { 700 })).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = if lr.is_empty() {
        (root.clone(), None)
    } else {
        let (t, b) = root.split_vertically(420);
        (t, Some(b))
    };
    let mut chart = ChartBuilder::on(&top)
        .caption("loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..last, (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("step").draw().map_err(|e| e.to_string())?;
    // The train loss in blue, the overall validation loss in red, then one colour per source of
    // the data and per extra validation set: forgetting shows here.
    for (i, (name, points)) in series.iter().enumerate() {
        let color = match *name {
            "loss" => BLUE.to_rgba(),
            "val_loss" => RED.to_rgba(),
            _ => Palette99::pick(i + 2).to_rgba(),
        };
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(if *name == "loss" { 2 } else { 1 }),
            ))
            .map_err(|e| e.to_string())?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;
    if let Some(bottom) = bottom {
        let max_lr = lr.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-12);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("learning rate", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..last, 0f64..max_lr * 1.05)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("step").draw().map_err(|e| e.to_string())?;
        chart.draw_series(LineSeries::new(lr, &GREEN)).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
