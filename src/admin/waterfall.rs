//! A page's waterfall as people read it (`/pages/{request_id}` with
//! `Accept: text/html`): one bar per fragment from its start to its end,
//! coloured by outcome and labelled with its id, in an inline SVG. Small,
//! hand-written, nothing fetched from elsewhere.

use std::fmt::Write as _;

use crate::telemetry::PageRecord;

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    crate::rewrite::encode_attr(s).replace('\'', "&#39;")
}

/// The colour of an outcome's bar.
fn colour(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "#2e8b57",
        "timeout" => "#d2691e",
        "unavailable" => "#b22222",
        "not_found" => "#808080",
        "unauthorized" | "forbidden" => "#8a2be2",
        _ => "#c71585",
    }
}

const ROW: f64 = 24.0;
const LABEL: f64 = 190.0;
const WIDTH: f64 = 900.0;

/// The HTML page of one page's waterfall.
pub fn page(record: &PageRecord) -> String {
    let total = record
        .fragments
        .iter()
        .map(|f| f.end_ms)
        .fold(record.total_ms, f64::max)
        .max(1.0);
    let scale = (WIDTH - LABEL - 170.0) / total;
    let rows = record.fragments.len().max(1) as f64;
    let height = ROW * (rows + 2.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         role=\"img\" aria-label=\"waterfall\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    // The time axis: a tick every tenth of the page.
    for i in 0..=10 {
        let t = total * f64::from(i) / 10.0;
        let x = LABEL + t * scale;
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"14\" fill=\"#666\" text-anchor=\"middle\">{t:.0} ms</text>",
            top = ROW,
            bottom = height - 4.0
        );
    }
    for (i, f) in record.fragments.iter().enumerate() {
        let y = ROW * (i as f64 + 1.0) + 4.0;
        let x = LABEL + f.start_ms * scale;
        let w = ((f.end_ms - f.start_ms) * scale).max(2.0);
        let detail = format!(
            "{} {} · {} · {} · {} B · {:.1}–{:.1} ms{}",
            f.id,
            f.origin.as_deref().unwrap_or("-"),
            f.outcome,
            f.status,
            f.bytes,
            f.start_ms,
            f.end_ms,
            f.server.map(|s| format!(" · {s}")).unwrap_or_default()
        );
        let _ = write!(
            svg,
            "<g class=\"bar\" data-outcome=\"{outcome}\"><title>{title}</title>\
             <text x=\"{lx}\" y=\"{ty:.1}\" fill=\"#222\">{label}</text>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h}\" rx=\"3\" fill=\"{fill}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" fill=\"#444\">{dur:.1} ms {outcome}{cache}</text></g>",
            outcome = escape(f.outcome),
            // Where the answer came from, when the fragment cache had a say.
            cache = match f.cache {
                "hit" | "stale" => format!(" · cache {}", f.cache),
                _ => String::new(),
            },
            title = escape(&detail),
            lx = 6,
            ty = y + 13.0,
            label = escape(&f.id),
            h = ROW - 8.0,
            fill = colour(f.outcome),
            tx = x + w + 6.0,
            dur = f.end_ms - f.start_ms,
        );
    }
    // The whole page.
    let y = ROW * (rows + 1.0) + 4.0;
    let _ = write!(
        svg,
        "<g class=\"bar\"><text x=\"6\" y=\"{ty:.1}\" font-weight=\"bold\">page</text>\
         <rect x=\"{LABEL}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h}\" rx=\"3\" fill=\"#4682b4\"/>\
         <text x=\"{tx:.1}\" y=\"{ty:.1}\">{total:.1} ms, status {status}</text></g></svg>",
        ty = y + 13.0,
        w = (record.total_ms * scale).max(2.0),
        h = ROW - 8.0,
        tx = LABEL + record.total_ms * scale + 6.0,
        total = record.total_ms,
        status = record.status,
    );
    let mut rows_html = String::new();
    for f in &record.fragments {
        let _ = write!(
            rows_html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            escape(&f.id),
            escape(f.origin.as_deref().unwrap_or("-")),
            f.server.map_or_else(|| "-".to_string(), |s| s.to_string()),
            escape(f.outcome),
            f.status,
            f.bytes,
            f.start_ms,
            f.end_ms,
            escape(f.cache)
        );
    }
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Waterfall {id}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin-top:16px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}</style></head>\
         <body><h1>Page {path}</h1><p>request {id} · status {status} · {total:.1} ms · {n} fragments \
         · <a href=\"/pages\">all pages (JSON)</a></p>{svg}\
         <table><tr><th>id</th><th>origin</th><th>server</th><th>outcome</th><th>status</th><th>bytes</th>\
         <th>start ms</th><th>end ms</th><th>cache</th></tr>{rows_html}</table></body></html>",
        id = escape(&record.request_id),
        path = escape(&record.path),
        status = record.status,
        total = record.total_ms,
        n = record.fragments.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::FragmentTiming;

    #[test]
    fn a_bar_per_fragment_and_nothing_unescaped() {
        let record = PageRecord {
            request_id: "r1".into(),
            path: "/<x>".into(),
            status: 200,
            total_ms: 120.0,
            fragments: vec![
                FragmentTiming {
                    id: "cart".into(),
                    origin: Some("shop".into()),
                    server: "127.0.0.1:1".parse().ok(),
                    outcome: "ok",
                    status: 200,
                    bytes: 10,
                    start_ms: 1.0,
                    end_ms: 40.0,
                    cache: "hit",
                },
                FragmentTiming {
                    id: "slow\"<".into(),
                    origin: None,
                    server: None,
                    outcome: "timeout",
                    status: 0,
                    bytes: 0,
                    start_ms: 2.0,
                    end_ms: 110.0,
                    cache: "none",
                },
            ],
        };
        let html = page(&record);
        assert_eq!(html.matches("<g class=\"bar\" data-outcome=").count(), 2);
        assert!(html.contains("data-outcome=\"timeout\""));
        assert!(html.contains("slow&quot;&lt;"));
        assert!(!html.contains("slow\"<"));
        assert!(html.contains("Page /&lt;x&gt;"));
        // The bar says where a cached answer came from.
        assert!(html.contains("39.0 ms ok · cache hit</text>"));
        assert!(!html.contains("timeout · cache"));
    }
}
