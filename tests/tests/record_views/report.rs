//! `record report` opened in headless Chromium.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recorder_tests::agent_fixtures::{layers, write_image};

use super::{agent_record, ok};

const CHROMIUM_DEADLINE: Duration = Duration::from_secs(120);

/// Runs headless Chromium on `page` with `extra` arguments; returns (stdout, stderr). A
/// fresh profile and HOME under `scratch`, so nothing outside it is written.
fn chromium(scratch: &Path, page: &Path, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir_in(scratch).unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .env("HOME", profile.path())
        .env("XDG_CONFIG_HOME", profile.path())
        .env("XDG_CACHE_HOME", profile.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running chromium; `cargo xtask setup` installs it");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > CHROMIUM_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {CHROMIUM_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    assert!(status.success(), "chromium: {status}\n{err}");
    (out, err)
}

/// Console messages and refused loads Chromium logged.
fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Refused to"))
        .collect()
}

#[test]
fn report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = write_image(&layout);
    let record = agent_record(dir.path(), &manifest);
    let report = dir.path().join("report.html");
    ok(&[
        "record",
        "report",
        record.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("app/&lt;script&gt;alert(1)&lt;/script&gt;"));

    // The DOM as Chromium built it: no script element (the hostile path stayed text), one
    // filled area per layer in the chart.
    let (dom, stderr) = chromium(dir.path(), &report, &["--dump-dom"]);
    assert!(dom.contains("id=\"chart\""), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    let chart = &dom[dom.find("id=\"chart\"").unwrap()..];
    let chart = &chart[..chart.find("</figure>").unwrap()];
    assert_eq!(chart.matches("<polygon").count(), layers().len(), "{chart}");
    assert_eq!(console_errors(&stderr), Vec::<&str>::new(), "{stderr}");

    // The screenshot: not blank, and the chart's base layer drawn in its colour.
    let shot = dir.path().join("shot.png");
    let (_, stderr) = chromium(
        dir.path(),
        &report,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1000",
            "--hide-scrollbars",
        ],
    );
    assert_eq!(console_errors(&stderr), Vec::<&str>::new(), "{stderr}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<(u8, u8, u8)> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| (p[0], p[1], p[2]))
        .collect();
    let distinct: std::collections::HashSet<_> = pixels.iter().collect();
    assert!(
        distinct.len() > 50,
        "only {} colours: a blank page?",
        distinct.len()
    );
    let base = recorder::record::report::layer_colour(0);
    let base_pixels = pixels.iter().filter(|p| **p == base).count();
    assert!(
        base_pixels > 5_000,
        "layer 0's area has {base_pixels} pixels of {base:?}"
    );

    // The console check can fail: the same page with an external image is refused and logged.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        html.replace("</body>", "<img src=\"http://127.0.0.1:9/x.png\"></body>"),
    )
    .unwrap();
    let (_, stderr) = chromium(dir.path(), &control, &["--dump-dom"]);
    assert!(
        !console_errors(&stderr).is_empty(),
        "no console error logged:\n{stderr}"
    );
}
