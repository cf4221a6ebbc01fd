//! The report's plots, as SVG files drawn by plotters (no system fonts needed: plotters lays
//! text out by estimate and the SVG names a generic font).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::histogram::LatencyHistogram;

const SIZE: (u32, u32) = (760, 420);
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` (x, y) with linear axes.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> anyhow::Result<()> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (1.0f64, 1.0f64);
    for (x, y) in all {
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
    }
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..y_max * 1.1)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(draw)?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(draw)?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

/// Cumulative distributions of latency histograms, on a logarithmic millisecond axis.
pub fn cdfs(path: &Path, title: &str, series: &[(&str, &LatencyHistogram)]) -> anyhow::Result<()> {
    let curves: Vec<Series<'_>> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| Series {
            name,
            points: (1..=1000)
                .map(|i| {
                    let q = f64::from(i) / 1000.0;
                    let ms = h.quantile(q).map_or(0.0, |d| d.as_secs_f64() * 1e3);
                    (ms.max(0.01), q * 100.0)
                })
                .collect(),
        })
        .collect();
    let x_max = curves
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let x_min = curves
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(x_max, f64::min)
        .max(0.01);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((x_min * 0.9..x_max * 1.1).log_scale(), 0.0..100.0)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("% of samples at or below")
        .draw()
        .map_err(draw)?;
    for (i, s) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(draw)?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

fn draw<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn charts_are_svg_files() {
        let dir = tempfile::TempDir::new().unwrap();
        let line = dir.path().join("line.svg");
        lines(
            &line,
            "t",
            "x",
            "y",
            &[Series {
                name: "a",
                points: vec![(0.0, 1.0), (1.0, 3.0)],
            }],
        )
        .unwrap();
        let mut h = LatencyHistogram::new();
        for ms in 1..100 {
            h.record(Duration::from_millis(ms));
        }
        let cdf = dir.path().join("cdf.svg");
        cdfs(&cdf, "t", &[("a", &h)]).unwrap();
        for p in [line, cdf] {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.starts_with("<svg"), "{}", &text[..40.min(text.len())]);
        }
    }
}
