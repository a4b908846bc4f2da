//! JSON string encoding byte-for-byte as Go's `encoding/json` Encoder writes it (with its
//! default HTML escaping), so that records match what stargz-snapshotter emits.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a quoted JSON string the way Go encodes a `string` holding these bytes.
///
/// Go escapes `"` and `\`, uses `\b \f \n \r \t` (Go ≥ 1.22) and `\u00XX` for other control
/// bytes, escapes `<`, `>`, `&` (HTML-safe mode, the Encoder's default), U+2028 and U+2029,
/// and replaces each byte that does not start a valid UTF-8 sequence with `\ufffd`.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut rest = s;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(v) => (v, false),
            Err(e) => {
                // SAFETY-free: the prefix up to valid_up_to is valid UTF-8 by definition.
                let v = std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default();
                (v, true)
            }
        };
        write_valid(out, valid);
        rest = &rest[valid.len()..];
        if bad {
            // Go's decoder consumes one byte per invalid sequence start.
            out.extend_from_slice(b"\\ufffd");
            rest = &rest[1..];
        }
    }
    out.push(b'"');
}

fn write_valid(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            _ => None,
        };
        if let Some(e) = esc {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(e);
            i += 1;
            start = i;
        } else if b < 0x20 || b == b'<' || b == b'>' || b == b'&' {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            i += 1;
            start = i;
        } else if b == 0xe2
            && bytes.get(i + 1) == Some(&0x80)
            && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9))
        {
            // U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR break JavaScript parsers.
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                b"\\u2028"
            } else {
                b"\\u2029"
            });
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &[u8]) -> String {
        let mut v = Vec::new();
        write_string(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn matches_go_encoder() {
        // Expected strings are what Go 1.22+ json.NewEncoder(w).Encode(string(b)) writes.
        assert_eq!(enc(b"usr/bin/sh"), r#""usr/bin/sh""#);
        assert_eq!(enc(b"a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(enc(b"q\"b\\s"), r#""q\"b\\s""#);
        assert_eq!(
            enc(b"\n\r\t\x08\x0c\x01\x1f\x7f"),
            "\"\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\""
        );
        assert_eq!(enc("\u{2028}x\u{2029}".as_bytes()), r#""\u2028x\u2029""#);
        assert_eq!(enc("é€😀".as_bytes()), "\"é€😀\"");
        assert_eq!(enc(b"a\xffb"), r#""a\ufffdb""#);
        // A truncated 3-byte sequence is two invalid starts in Go, not one.
        assert_eq!(enc(b"\xe2\x82"), r#""\ufffd\ufffd""#);
        // An encoded surrogate is invalid byte by byte.
        assert_eq!(enc(b"\xed\xa0\x80"), r#""\ufffd\ufffd\ufffd""#);
        // A real U+FFFD is written as itself.
        assert_eq!(enc("\u{fffd}".as_bytes()), "\"\u{fffd}\"");
    }
}
