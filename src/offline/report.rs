//! `tandem evaluate --report DIR`: the evaluation as JSON, as a Markdown table, and as an SVG
//! chart of HitRate@k against intra-list diversity, one point per DPP `theta` of the serving
//! pipeline with the baselines beside them, so the relevance/diversity trade-off can be read
//! at a glance.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::evaluate::{EvaluationReport, VariantResult};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The chart could not be drawn.
    #[error("cannot draw the chart: {0}")]
    Chart(String),
    /// The report could not be serialised.
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// The files a report consists of.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// `evaluation.json`.
    pub json: PathBuf,
    /// `evaluation.md`.
    pub table: PathBuf,
    /// `theta-tradeoff.svg`.
    pub chart: PathBuf,
}

/// Writes the JSON, the Markdown table and the chart into `dir` (created when missing).
pub fn write_report(report: &EvaluationReport, dir: &Path) -> Result<ReportFiles, ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let files = ReportFiles {
        json: dir.join("evaluation.json"),
        table: dir.join("evaluation.md"),
        chart: dir.join("theta-tradeoff.svg"),
    };
    std::fs::write(&files.json, serde_json::to_vec_pretty(report)?).map_err(io(&files.json))?;
    std::fs::write(&files.table, markdown_table(report)).map_err(io(&files.table))?;
    draw_chart(report, &files.chart)?;
    Ok(files)
}

/// The metrics as Markdown tables: one row per variant, then the serving row's case groups.
pub fn markdown_table(report: &EvaluationReport) -> String {
    let k = report.params.k;
    let mut out = format!(
        "| variant | HR@{k} | NDCG@{k} | MRR | coverage | diversity | HR@{k} +p | NDCG@{k} +p |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for v in &report.variants {
        let (hr, ndcg) = v.with_purchased.as_ref().map_or_else(
            || ("–".to_string(), "–".to_string()),
            |p| (format!("{:.4}", p.hit_rate), format!("{:.4}", p.ndcg)),
        );
        out.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {hr} | {ndcg} |\n",
            v.name, v.hit_rate, v.ndcg, v.mrr, v.coverage, v.diversity
        ));
    }
    out.push_str(
        "\nRequests with the cart alone; \"+p\": the same requests with the shopper's earlier purchases.\n",
    );
    if !report.case_groups.is_empty() {
        let total = report
            .case_groups
            .iter()
            .map(|g| g.cases)
            .sum::<usize>()
            .max(1);
        out.push_str(&format!(
            "\n| serving row, hidden item | cases | bought before | HR@{k} | HR@{k} +p |\n|---|---:|---:|---:|---:|\n"
        ));
        for g in &report.case_groups {
            out.push_str(&format!(
                "| {} | {:.1} % | {:.1} % | {:.4} | {:.4} |\n",
                g.name,
                100.0 * g.cases as f64 / total as f64,
                100.0 * g.bought_before as f64 / g.cases.max(1) as f64,
                g.hit_rate,
                g.hit_rate_purchased
            ));
        }
    }
    out
}

/// The theta rows in order of theta: the serving row and every `pipeline, theta T` row.
fn theta_points(report: &EvaluationReport) -> Vec<(f32, &VariantResult)> {
    let mut points: Vec<(f32, &VariantResult)> = report
        .variants
        .iter()
        .filter_map(|v| {
            if v.name.ends_with("(serving)") {
                Some((report.serving_theta, v))
            } else {
                v.name
                    .strip_prefix("pipeline, theta ")
                    .and_then(|t| t.parse().ok())
                    .map(|t| (t, v))
            }
        })
        .collect();
    points.sort_by(|a, b| b.0.total_cmp(&a.0));
    points
}

fn draw_chart(report: &EvaluationReport, path: &Path) -> Result<(), ReportError> {
    let chart_error = |e: &dyn std::fmt::Display| ReportError::Chart(e.to_string());
    let thetas = theta_points(report);
    let baselines: Vec<&VariantResult> = report
        .variants
        .iter()
        .filter(|v| !v.name.starts_with("pipeline"))
        .collect();
    let all = thetas
        .iter()
        .map(|(_, v)| *v)
        .chain(baselines.iter().copied());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for v in all {
        x_min = x_min.min(v.diversity);
        x_max = x_max.max(v.diversity);
        y_max = y_max.max(v.hit_rate);
    }
    if x_min > x_max {
        (x_min, x_max) = (0.0, 1.0);
    }
    let x_pad = ((x_max - x_min) * 0.08).max(0.01);
    // Diversity is 1 - cosine: up to 2 when embeddings point apart.
    let x_range = (x_min - x_pad).max(0.0)..(x_max + x_pad);
    let y_range = 0.0..(y_max * 1.12).max(0.01);

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_error(&e))?;
    let k = report.params.k;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("HitRate@{k} against intra-list diversity, across DPP theta"),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| chart_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("intra-list diversity (mean 1 - cosine of diversity embeddings)")
        .y_desc(format!("HitRate@{k}"))
        .draw()
        .map_err(|e| chart_error(&e))?;

    let line: Vec<(f64, f64)> = thetas
        .iter()
        .map(|(_, v)| (v.diversity, v.hit_rate))
        .collect();
    chart
        .draw_series(LineSeries::new(line.iter().copied(), BLUE.stroke_width(2)))
        .map_err(|e| chart_error(&e))?
        .label("serving pipeline, by theta")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(thetas.iter().map(|(theta, v)| {
            EmptyElement::at((v.diversity, v.hit_rate))
                + Circle::new((0, 0), 5, BLUE.filled())
                + Text::new(format!("θ={theta}"), (8, -14), ("sans-serif", 14))
        }))
        .map_err(|e| chart_error(&e))?;
    chart
        .draw_series(baselines.iter().map(|v| {
            EmptyElement::at((v.diversity, v.hit_rate))
                + TriangleMarker::new((0, 0), 6, RED.filled())
                + Text::new(v.name.clone(), (8, 2), ("sans-serif", 12))
        }))
        .map_err(|e| chart_error(&e))?
        .label("baselines (one signal, no DPP)")
        .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, RED.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_error(&e))?;
    root.present().map_err(|e| chart_error(&e))?;
    Ok(())
}
