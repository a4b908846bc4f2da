//! `record report`: one self-contained HTML page of what a workload needed of its image.
//!
//! No script, no external resource (a Content-Security-Policy forbids any load, so a browser
//! would report one as an error), every string that comes from the image or the record
//! escaped. The chart is SVG drawn by `plotters` (SVG backend, no fonts: the browser draws the
//! text), inline in the page: bytes needed over time since the start, stacked by layer, one
//! area per layer of the image.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::needs::{Amount, Needs, human_bytes, percent};

/// Why the report could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// plotters refused to draw.
    #[error("drawing the report's chart: {0}")]
    Chart(String),
}

/// Chart size in CSS pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 420;

/// One colour per layer, cycling: distinct, and readable stacked.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The colour of layer `index` in the chart.
pub fn layer_colour(index: usize) -> (u8, u8, u8) {
    let c = COLOURS[index % COLOURS.len()];
    (c.0, c.1, c.2)
}

/// The page for `needs`; `title` names the record and image (escaped here).
pub fn render(needs: &Needs, title: &str) -> Result<String, ReportError> {
    let chart = chart(needs)?;
    let mut h = String::with_capacity(16 * 1024 + needs.files.len() * 160);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n<title>What the workload needed: {}</title>\n<style>\n{}</style>\n\
         </head><body>\n<h1>What the workload needed</h1>\n<p class=\"sub\">{}<br>manifest \
         <code>{}</code></p>\n",
        escape(title),
        CSS,
        escape(title),
        escape(&needs.manifest)
    );
    let time = needs
        .last_access_ns
        .map_or_else(|| "unknown (no companion times)".to_owned(), seconds);
    let _ = writeln!(
        h,
        "<p class=\"summary\">Read <b>{} of {}</b> files ({:.1}%), <b>{} of {}</b> ({:.1}%) of \
         the image's file bytes; full pull: {} compressed. Last first access after <b>{}</b>. \
         {} record entries, {} outside the image.</p>",
        needs.read.files,
        needs.total.files,
        percent(needs.read.files, needs.total.files),
        human_bytes(needs.read.bytes),
        human_bytes(needs.total.bytes),
        percent(needs.read.bytes, needs.total.bytes),
        human_bytes(needs.blob_bytes),
        escape(&time),
        needs.entries,
        needs.outside
    );
    let _ = write!(
        h,
        "<h2>Bytes needed over time, by layer</h2>\n<figure id=\"chart\" data-series=\"{}\">{}</figure>\n",
        needs.layers.len(),
        chart
    );
    h.push_str(
        "<h2>Per layer</h2>\n<table id=\"layers\"><thead><tr><th>layer</th><th>digest</th>\
         <th>blob</th><th>entries</th><th>files read</th><th>of files</th><th>bytes read</th>\
         <th>of bytes</th><th>%</th></tr></thead><tbody>\n",
    );
    for l in &needs.layers {
        let (r, g, b) = layer_colour(l.index);
        let _ = writeln!(
            h,
            "<tr><td><span class=\"key\" style=\"background:rgb({r},{g},{b})\"></span>{}</td>\
             <td><code title=\"{}\">{}</code></td>{}</tr>",
            l.index,
            escape(&l.digest),
            escape(l.digest.get(..19).unwrap_or(&l.digest)),
            amounts(l.blob_bytes, l.entries, &l.read, &l.total),
        );
    }
    let _ = writeln!(
        h,
        "<tr class=\"total\"><td>image</td><td></td>{}</tr></tbody></table>",
        amounts(needs.blob_bytes, needs.entries, &needs.read, &needs.total),
    );
    h.push_str(
        "<h2>Files, in record order</h2>\n<table id=\"files\"><thead><tr><th>#</th>\
         <th>first access</th><th>layer</th><th>kind</th><th>bytes</th><th>runs</th>\
         <th>path</th></tr></thead><tbody>\n",
    );
    for (i, f) in needs.files.iter().enumerate() {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><code>{}</code></td></tr>",
            i + 1,
            f.offset_ns.map(seconds).unwrap_or_default(),
            f.layer.map(|l| l.to_string()).unwrap_or_default(),
            f.kind,
            f.bytes,
            f.runs.map(|r| r.to_string()).unwrap_or_default(),
            escape(&f.path)
        );
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    Ok(h)
}

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
code{font-size:90%}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;white-space:nowrap}\
td:last-child,th:last-child{text-align:left;white-space:normal;word-break:break-all}.sub{color:#555}\
.key{display:inline-block;width:.8em;height:.8em;margin-right:.4em}\
tr.total{font-weight:bold}figure{margin:0}\n";

/// `1.234 s`.
fn seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    crate::escape::escape(s, crate::escape::HTML)
}

/// The stacked series: for each layer, points (x, bytes of this and all lower layers) after
/// each first access, as steps. x is seconds since the start, or the access's position when
/// the record has no times.
fn series(needs: &Needs) -> (Vec<Vec<(f64, f64)>>, bool) {
    let timed = needs.files.iter().any(|f| f.offset_ns.is_some());
    let mut events: Vec<(f64, usize, u64)> = needs
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let layer = f.layer?;
            let x = if timed {
                f.offset_ns? as f64 / 1e9
            } else {
                (i + 1) as f64
            };
            Some((x, layer, f.bytes))
        })
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = needs.layers.len();
    let mut cumulative = vec![0u64; n];
    let mut out: Vec<Vec<(f64, f64)>> = vec![vec![(0.0, 0.0)]; n];
    for (x, layer, bytes) in events {
        let before = stacked(&cumulative);
        if let Some(c) = cumulative.get_mut(layer) {
            *c += bytes;
        }
        let after = stacked(&cumulative);
        for k in 0..n {
            out[k].push((x, before[k]));
            out[k].push((x, after[k]));
        }
    }
    (out, timed)
}

fn stacked(cumulative: &[u64]) -> Vec<f64> {
    let mut sum = 0u64;
    cumulative
        .iter()
        .map(|&c| {
            sum += c;
            sum as f64
        })
        .collect()
}

fn chart(needs: &Needs) -> Result<String, ReportError> {
    let (series, timed) = series(needs);
    let x_max = series
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(0.0f64, f64::max)
        .max(if timed { 0.001 } else { 1.0 })
        * 1.02;
    let top = needs.read.bytes.max(1) as f64;
    let (unit, scale) = unit_of(needs.read.bytes);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| ReportError::Chart(e.to_string());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..top * 1.05 / scale)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(if timed {
                "seconds since the start"
            } else {
                "files opened, in order"
            })
            .y_desc(format!("bytes needed ({unit})"))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;
        // Top of the stack first, so that each lower layer's area is drawn over it.
        for (k, points) in series.iter().enumerate().rev() {
            let colour = COLOURS[k % COLOURS.len()];
            let scaled: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x, y / scale)).collect();
            chart
                .draw_series(AreaSeries::new(scaled, 0.0, colour).border_style(colour))
                .map_err(|e| err(&e))?
                .label(format!("layer {k}"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

fn unit_of(bytes: u64) -> (&'static str, f64) {
    match bytes {
        b if b >= 1 << 30 => ("GiB", (1u64 << 30) as f64),
        b if b >= 1 << 20 => ("MiB", (1u64 << 20) as f64),
        b if b >= 1 << 10 => ("KiB", 1024.0),
        _ => ("B", 1.0),
    }
}

/// The cells of a layer's (or the image's) row: blob, entries, files and bytes read against
/// its totals, and the share of bytes.
fn amounts(blob_bytes: u64, entries: u64, read: &Amount, total: &Amount) -> String {
    format!(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>",
        human_bytes(blob_bytes),
        entries,
        read.files,
        total.files,
        human_bytes(read.bytes),
        human_bytes(total.bytes),
        percent(read.bytes, total.bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::needs::{Amount, FileRead, LayerNeeds};

    fn needs() -> Needs {
        let layer = |index| LayerNeeds {
            index,
            digest: format!("sha256:{index}"),
            blob_bytes: 10,
            entries: 1,
            read: Amount { files: 1, bytes: 5 },
            total: Amount { files: 2, bytes: 9 },
        };
        let file = |path: &str, layer, offset| FileRead {
            path: path.into(),
            layer: Some(layer),
            kind: "file",
            bytes: 5,
            offset_ns: Some(offset),
            runs: None,
        };
        Needs {
            manifest: "sha256:<m>".into(),
            layers: vec![layer(0), layer(1)],
            read: Amount {
                files: 2,
                bytes: 10,
            },
            total: Amount {
                files: 4,
                bytes: 18,
            },
            blob_bytes: 20,
            entries: 2,
            outside: 0,
            last_access_ns: Some(2_000_000),
            largest: vec![],
            files: vec![
                file("/a<script>alert(1)</script>", 1, 2_000_000),
                file("/b&\"'", 0, 1_000_000),
            ],
        }
    }

    #[test]
    fn escapes_image_strings_and_draws_one_area_per_layer() {
        let html = render(&needs(), "t<i>").unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<i>"));
        assert!(html.contains("/a&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("/b&amp;&quot;&#39;"));
        assert!(html.contains("sha256:&lt;m&gt;"));
        assert_eq!(html.matches("<polygon").count(), 2, "{html}");
        // Nothing to load: no link, source or CSS url (the SVG's xmlns is a name, not a load).
        for load in ["href", "src=", "url(", "<link", "@import"] {
            assert!(!html.contains(load), "{load} in {html}");
        }
    }

    #[test]
    fn stacks_layers_in_time_order() {
        let (s, timed) = series(&needs());
        assert!(timed);
        // Layer 1's file comes last; layer 0 is the bottom of the stack.
        assert_eq!(s[0].last(), Some(&(0.002, 5.0)));
        assert_eq!(s[1].last(), Some(&(0.002, 10.0)));
        assert_eq!(s[1][2], (0.001, 5.0));
        // Without companion times, the x axis is the order of first access.
        let mut untimed = needs();
        for f in &mut untimed.files {
            f.offset_ns = None;
        }
        let (s, timed) = series(&untimed);
        assert!(!timed);
        assert_eq!(s[1].last(), Some(&(2.0, 10.0)));
        assert_eq!(s[0][1..], [(1.0, 0.0), (1.0, 0.0), (2.0, 0.0), (2.0, 5.0)]);
        assert!(
            render(&untimed, "t")
                .unwrap()
                .contains("files opened, in order")
        );
    }
}
