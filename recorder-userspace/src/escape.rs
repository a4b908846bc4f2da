//! Escaping text for the formats written by hand here: HTML (`record report`) and Prometheus
//! label values (`/metrics`). Hand-written: a table of three to five replacements does not
//! warrant a dependency.

/// HTML element content and quoted attribute values.
pub const HTML: &[(char, &str)] = &[
    ('&', "&amp;"),
    ('<', "&lt;"),
    ('>', "&gt;"),
    ('"', "&quot;"),
    ('\'', "&#39;"),
];

/// A label value of the Prometheus text exposition format.
pub const PROMETHEUS_LABEL: &[(char, &str)] = &[('\\', "\\\\"), ('"', "\\\""), ('\n', "\\n")];

/// `text` with every character `table` names replaced by its escape.
pub fn escape(text: &str, table: &[(char, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match table.iter().find(|(from, _)| *from == c) {
            Some((_, to)) => out.push_str(to),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_by_table() {
        for (text, table, want) in [
            ("a<b & 'c'", HTML, "a&lt;b &amp; &#39;c&#39;"),
            ("\"q\" > é", HTML, "&quot;q&quot; &gt; é"),
            ("plain", HTML, "plain"),
            ("a\\b\"c\nd", PROMETHEUS_LABEL, "a\\\\b\\\"c\\nd"),
            ("<&>", PROMETHEUS_LABEL, "<&>"),
        ] {
            assert_eq!(escape(text, table), want, "{text:?}");
        }
    }
}
