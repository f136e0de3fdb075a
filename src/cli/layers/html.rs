//! `nixlayer layers --html`: the layer plan as one self-contained HTML page
//! (inline CSS, no script, no external asset): a row per store layer with a
//! bar to scale of its bytes (Σ narSize), its path count and its paths.
//!
//! The page is a function of the plan alone (no time, no host), so the same
//! plan always gives the same bytes; every text from outside (the image
//! name, store paths) is escaped.

use std::fmt::Write as _;

use nixlayer::closure::ClosureGraph;
use nixlayer::plan::LayerPlan;

use crate::cli::{plural, printer};

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;background:#fff}
h1{font-size:1.3em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.35em .6em;border-bottom:1px solid #ddd}
th{font-weight:600;border-bottom:2px solid #999}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.size{width:30%}
.bar{height:1em;min-width:2px;background:#4a7bd0;border-radius:2px}
.bytes{font-size:.85em;color:#555;white-space:nowrap}
ul{margin:0;padding:0;list-style:none}
li{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}
li .bytes{font-family:system-ui,sans-serif;margin-left:.6em}
";

/// `text` with the characters HTML gives a meaning escaped, for element
/// content and quoted attribute values alike.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `part` as a percentage of `whole`, two decimals, by integer arithmetic
/// (no float formatting in the bytes); 0 when `whole` is 0.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0.00".to_owned();
    }
    let hundredths = u128::from(part) * 10_000 / u128::from(whole);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The page for `plan`, titled after image `reference`; sizes from `closure`.
pub(super) fn render(reference: &str, closure: &ClosureGraph, plan: &LayerPlan) -> String {
    let size = |p: &str| closure.get(p).map_or(0, |info| info.nar_size);
    let sizes: Vec<u64> = plan
        .layers
        .iter()
        .map(|l| l.iter().map(|p| size(p.as_str())).sum())
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let total: u64 = sizes.iter().sum();
    let paths: usize = plan.layers.iter().map(Vec::len).sum();
    let reference = escape(reference);

    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Layer plan of {reference}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <h1>Layer plan of <code>{reference}</code></h1>\n\
         <p>{} store layer{}, {paths} path{}, {} ({total} bytes, the sum of the paths' NAR sizes). \
         Layers bottom first; bars to scale, the largest layer fills its column.</p>\n\
         <table>\n<thead><tr><th>layer</th><th>bytes</th><th>paths</th><th>store paths</th></tr></thead>\n<tbody>\n",
        plan.layers.len(),
        plural(plan.layers.len()),
        plural(paths),
        escape(&printer::bytes(total)),
    );
    for (i, (layer, &bytes)) in plan.layers.iter().zip(&sizes).enumerate() {
        let _ = writeln!(
            h,
            "<tr id=\"layer-{n}\"><td class=\"n\">{n}</td>\
             <td class=\"size\" title=\"{bytes} bytes, {share}% of the store layers\">\
             <div class=\"bar\" style=\"width:{width}%\"></div>\
             <span class=\"bytes\">{human}</span></td>\
             <td class=\"n\">{count}</td><td><ul>",
            n = i + 1,
            share = percent(bytes, total),
            width = percent(bytes, largest),
            human = escape(&printer::bytes(bytes)),
            count = layer.len(),
        );
        for path in layer {
            let bytes = size(path.as_str());
            let _ = writeln!(
                h,
                "<li>{}<span class=\"bytes\" title=\"{bytes} bytes\">{}</span></li>",
                escape(path.as_str()),
                escape(&printer::bytes(bytes)),
            );
        }
        h.push_str("</ul></td></tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlayer::closure::PathInfo;
    use nixlayer::nix::{StoreDir, StorePath};

    #[test]
    fn escapes_and_scales() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(percent(1, 3), "33.33");
        assert_eq!(percent(5, 5), "100.00");
        assert_eq!(percent(u64::MAX, u64::MAX), "100.00");
        assert_eq!(percent(1, 0), "0.00");
    }

    /// Two layers in a store whose directory HTML would misread.
    #[test]
    fn one_row_per_layer_everything_escaped() {
        let dir = StoreDir::new("/tmp/<b>&\"store'").unwrap();
        let path = |name: &str| {
            StorePath::parse(
                &dir,
                &format!("{dir}/00000000000000000000000000000000-{name}"),
            )
            .unwrap()
        };
        let (a, b, c) = (path("a"), path("b"), path("c"));
        let info = |p: &StorePath, nar_size| PathInfo {
            path: p.clone(),
            nar_hash: None,
            nar_size,
            references: vec![],
        };
        let closure =
            ClosureGraph::new(vec![info(&a, 3000), info(&b, 1000), info(&c, 500)]).unwrap();
        let plan = LayerPlan {
            layers: vec![vec![a.clone()], vec![b.clone(), c.clone()]],
        };
        let html = render("x/<img src=y>", &closure, &plan);
        assert!(html.starts_with("<!doctype html>\n"));
        assert!(html.ends_with("</html>\n"));
        assert!(!html.contains("<b>") && !html.contains("<img"), "{html}");
        assert!(
            html.contains("/tmp/&lt;b&gt;&amp;&quot;store&#39;/00000000000000000000000000000000-a")
        );
        assert_eq!(html.matches("<tr id=\"layer-").count(), 2);
        assert_eq!(html.matches("<li>").count(), 3);
        // The largest layer fills the column; the other is to scale.
        assert!(html.contains("width:100.00%"));
        assert!(html.contains("width:50.00%"));
        assert!(html.contains("3000 bytes, 66.66% of the store layers"));
        assert_eq!(html, render("x/<img src=y>", &closure, &plan));
    }
}
