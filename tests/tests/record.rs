//! The record: stargz-snapshotter's format, byte for byte, and the companion blob.

use recorder::record::{Extras, RecordBuilder, parse};

#[test]
fn record_bytes_match_the_go_recorder() {
    let mut r = RecordBuilder::new("sha256:0123");
    r.push(b"/bin/sh", Some(0));
    r.push(b"usr/lib/x<y>&z", Some(1));
    r.push(b"tab\there\"q\\", Some(10));
    r.push(b"bad\xffutf8", Some(2));
    r.push("sep\u{2028}".as_bytes(), Some(0));
    r.push(b"nolayer", None);
    // Expected text is what Go's json.Encoder writes for recorder.Entry values.
    let want = concat!(
        r#"{"path":"bin/sh","manifestDigest":"sha256:0123","layerIndex":0}"#,
        "\n",
        r#"{"path":"usr/lib/x\u003cy\u003e\u0026z","manifestDigest":"sha256:0123","layerIndex":1}"#,
        "\n",
        r#"{"path":"tab\there\"q\\","manifestDigest":"sha256:0123","layerIndex":10}"#,
        "\n",
        r#"{"path":"bad\ufffdutf8","manifestDigest":"sha256:0123","layerIndex":2}"#,
        "\n",
        r#"{"path":"sep\u2028","manifestDigest":"sha256:0123","layerIndex":0}"#,
        "\n",
        r#"{"path":"nolayer","manifestDigest":"sha256:0123"}"#,
        "\n",
    );
    assert_eq!(String::from_utf8(r.to_bytes()).unwrap(), want);
}

#[test]
fn dedup_keeps_first_access_order() {
    let mut r = RecordBuilder::new("sha256:m");
    assert!(r.push(b"b", Some(1)));
    assert!(r.push(b"a", Some(0)));
    assert!(!r.push(b"/b", Some(0)));
    assert!(!r.push(b"./a/", Some(1)));
    assert!(r.push(b"c", Some(2)));
    let paths: Vec<&[u8]> = r.entries().iter().map(|e| &e.path[..]).collect();
    assert_eq!(paths, [&b"b"[..], b"a", b"c"]);
    assert_eq!(r.entries()[0].layer_index, Some(1));
}

#[test]
fn extras_stay_out_of_the_main_record() {
    let mut r = RecordBuilder::new("sha256:m");
    let x = Extras {
        offset_ns: Some(1500),
        pid: Some(42),
        comm: Some("sh".into()),
        kind: Some("exec".into()),
    };
    r.push_with(b"bin/sh", Some(0), x);
    r.push(b"etc/passwd", Some(0));
    r.push_with(
        b"etc/hosts",
        Some(1),
        Extras {
            pid: Some(7),
            ..Default::default()
        },
    );
    let main = String::from_utf8(r.to_bytes()).unwrap();
    assert!(!main.contains("pid") && !main.contains("comm"));
    assert_eq!(main.lines().count(), 3);
    let companion = String::from_utf8(r.companion_bytes()).unwrap();
    assert_eq!(
        companion,
        concat!(
            r#"{"index":0,"path":"bin/sh","offsetNs":1500,"pid":42,"comm":"sh","kind":"exec"}"#,
            "\n",
            r#"{"index":2,"path":"etc/hosts","pid":7}"#,
            "\n",
        )
    );
}

#[test]
fn parse_round_trips_and_reports_bad_lines() {
    let mut r = RecordBuilder::new("sha256:m");
    r.push(b"a<b", Some(3));
    r.push(b"c", None);
    let parsed = parse(&r.to_bytes()).unwrap();
    assert_eq!(parsed, r.entries());
    let err = parse(b"{\"path\":\"a\"}\nnot json\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}
