//! SVG plots for the matrix report, drawn with plotters' SVG backend: one series per variant, as lines
//! (goodput vs loss) or points (throughput vs delay, Pantheon's plot).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One variant's points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's label.
    pub label: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// How the series are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Lines through the points, with a marker on each.
    Lines,
    /// Markers only.
    Points,
}

/// A plot to draw.
#[derive(Debug, Clone)]
pub struct Plot<'a> {
    /// The caption.
    pub title: &'a str,
    /// The x axis's description, with its unit.
    pub x_desc: &'a str,
    /// The y axis's description, with its unit.
    pub y_desc: &'a str,
    /// Lines or points.
    pub style: Style,
    /// The series.
    pub series: &'a [Series],
}

const COLORS: [RGBColor; 7] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// The upper end of an axis that holds `max` (0 to a tenth above it; 1 when everything is 0).
fn axis_end(max: f64) -> f64 {
    if max > 0.0 && max.is_finite() {
        max * 1.1
    } else {
        1.0
    }
}

/// Draws `plot` into an SVG file at `path`.
pub fn draw(path: &Path, plot: &Plot<'_>) -> Result<()> {
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let points = || plot.series.iter().flat_map(|s| s.points.iter());
    let x_end = axis_end(points().map(|p| finite(p.0)).fold(0.0, f64::max));
    let y_end = axis_end(points().map(|p| finite(p.1)).fold(0.0, f64::max));
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    let err = |e: String| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..x_end, 0f64..y_end)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(plot.x_desc)
        .y_desc(plot.y_desc)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, s) in plot.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (finite(x), finite(y))).collect();
        if plot.style == Style::Lines {
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?;
        }
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(e.to_string()))?
            .label(s.label.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
