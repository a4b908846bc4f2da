//! What a record says, through the `recorder` binary: `record merge` of several runs,
//! `record export` to each converter's format (checked against golden files and read back by
//! readers written to each consumer's documented schema), `record show --json` against sums
//! computed here from the image's own tar listing, and `record report` opened in headless
//! Chromium.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use recorder_tests::agent_fixtures::{layers, recorder_bin, write_image};

fn recorder(args: &[&str]) -> Output {
    Command::new(recorder_bin())
        .args(args)
        .env("RECORDER_LOG", "warn")
        .output()
        .expect("running recorder")
}

fn ok(args: &[&str]) -> Output {
    let out = recorder(args);
    assert!(
        out.status.success(),
        "recorder {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const MANIFEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Writes a record of `paths` (all of layer 0) and a companion giving entry `j` of run `run`
/// the first-access offset `offset(run, j)`; returns the record's path.
fn write_run(dir: &Path, run: usize, manifest: &str, paths: &[&str]) -> PathBuf {
    let file = dir.join(format!("run{run}.json"));
    let mut record = String::new();
    let mut companion = String::new();
    for (j, p) in paths.iter().enumerate() {
        record.push_str(&format!(
            "{{\"path\":\"{p}\",\"manifestDigest\":\"{manifest}\",\"layerIndex\":0}}\n"
        ));
        companion.push_str(&format!(
            "{{\"index\":{j},\"path\":\"{p}\",\"offsetNs\":{},\"kind\":\"open\"}}\n",
            offset(run, j)
        ));
    }
    std::fs::write(&file, record).unwrap();
    std::fs::write(dir.join(format!("run{run}.json.companion")), companion).unwrap();
    file
}

fn offset(run: usize, j: usize) -> u64 {
    (run as u64 + 1) * 1_000_000 + j as u64 * 10_000
}

fn record_paths(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["manifestDigest"], MANIFEST, "{l}");
            v["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn merge_of_three_runs_orders_by_mean_rank_and_drops_rare_files() {
    let dir = tempfile::tempdir().unwrap();
    // Ranks: bin/sh 0,0,1 (mean 1/3); app/run.sh 2,1,0 (1); etc/passwd 1,2,2 (5/3);
    // etc/hosts 3,-,3 (3) and app/up.txt -,3,- (3): no run reads both, so by path;
    // zz/last 4,5 and aa/first 5,4 (4.5): run 0 reads both and zz/last first, so it leads.
    let runs = [
        write_run(
            dir.path(),
            0,
            MANIFEST,
            &[
                "bin/sh",
                "etc/passwd",
                "app/run.sh",
                "etc/hosts",
                "zz/last",
                "aa/first",
            ],
        ),
        write_run(
            dir.path(),
            1,
            MANIFEST,
            &[
                "bin/sh",
                "app/run.sh",
                "etc/passwd",
                "app/up.txt",
                "aa/first",
                "zz/last",
            ],
        ),
        write_run(
            dir.path(),
            2,
            MANIFEST,
            &["app/run.sh", "bin/sh", "etc/passwd", "etc/hosts"],
        ),
    ];
    let runs: Vec<&str> = runs.iter().map(|p| p.to_str().unwrap()).collect();
    let cases: &[(&str, &[&str])] = &[
        (
            "1",
            &[
                "bin/sh",
                "app/run.sh",
                "etc/passwd",
                "app/up.txt",
                "etc/hosts",
                "zz/last",
                "aa/first",
            ],
        ),
        (
            "2",
            &[
                "bin/sh",
                "app/run.sh",
                "etc/passwd",
                "etc/hosts",
                "zz/last",
                "aa/first",
            ],
        ),
        ("3", &["bin/sh", "app/run.sh", "etc/passwd"]),
    ];
    for (k, want) in cases {
        let out_file = dir.path().join(format!("merged-{k}.json"));
        let mut args = vec!["record", "merge", "--min-runs", k, "--out"];
        args.push(out_file.to_str().unwrap());
        args.extend(&runs);
        let out = ok(&args);
        let merged = std::fs::read(&out_file).unwrap();
        assert_eq!(record_paths(&merged), *want, "--min-runs {k}");
        let dropped = 7 - want.len();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{dropped} read in fewer than {k} runs dropped")),
            "{stderr}"
        );
        // Deterministic: the same runs give the same bytes (to stdout without --out).
        let mut again = vec!["record", "merge", "--min-runs", k];
        again.extend(&runs);
        assert_eq!(ok(&again).stdout, merged);
    }
    // The companion keeps, per file, the run count and each run's first-access time.
    let companion = std::fs::read_to_string(dir.path().join("merged-1.json.companion")).unwrap();
    let lines: Vec<serde_json::Value> = companion
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    let by_path: BTreeMap<&str, &serde_json::Value> = lines
        .iter()
        .map(|l| (l["path"].as_str().unwrap(), l))
        .collect();
    let sh = by_path["bin/sh"];
    assert_eq!(sh["index"], 0);
    assert_eq!(sh["runs"], 3);
    let sh_offsets = [offset(0, 0), offset(1, 0), offset(2, 1)];
    assert_eq!(sh["offsetsNs"], serde_json::json!(sh_offsets));
    assert_eq!(sh["offsetNs"], sh_offsets.iter().sum::<u64>() / 3);
    let up = by_path["app/up.txt"];
    assert_eq!(
        (up["runs"].as_u64(), up["index"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(up["offsetsNs"], serde_json::json!([offset(1, 3)]));
}

#[test]
fn merge_refuses_runs_of_other_images_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_run(dir.path(), 0, MANIFEST, &["bin/sh"]);
    let other = format!("sha256:{}", "2".repeat(64));
    let b = write_run(dir.path(), 1, &other, &["bin/sh"]);
    let out = recorder(&["record", "merge", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        MANIFEST,
        other.as_str(),
    ] {
        assert!(stderr.contains(name), "{name} not in: {stderr}");
    }
    assert!(out.stdout.is_empty());
    let too_many = recorder(&["record", "merge", "--min-runs", "2", a.to_str().unwrap()]);
    assert!(!too_many.status.success());
    assert!(String::from_utf8_lossy(&too_many.stderr).contains("--min-runs 2"));
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/export")
}

/// The paths of the golden input record, as absolute paths.
fn golden_paths() -> Vec<String> {
    let input = std::fs::read(golden_dir().join("record.jsonl")).unwrap();
    String::from_utf8(input)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("/{}", v["path"].as_str().unwrap())
        })
        .collect()
}

/// stargz-snapshotter's `recorder.Entry` (analyzer/recorder/recorder.go): path,
/// manifestDigest, layerIndex; one JSON object per line.
fn read_stargz(bytes: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Entry {
        path: String,
        // `omitempty` in Go: both may be absent.
        #[allow(dead_code)]
        manifest_digest: Option<String>,
        #[allow(dead_code)]
        layer_index: Option<usize>,
    }
    bytes
        .lines()
        .map(|l| {
            format!(
                "/{}",
                serde_json::from_str::<Entry>(&l.unwrap()).unwrap().path
            )
        })
        .collect()
}

/// nydus-image's prefetch patterns (`get_patterns`/`generate_patterns`: stdin read line by
/// line, each line trimmed, relative ones skipped). Stricter here: every line must end in a
/// newline, be absolute and need no trimming.
fn read_paths(bytes: &[u8]) -> Vec<String> {
    let mut reader = bytes;
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            return out;
        }
        let path = line
            .strip_suffix('\n')
            .expect("every line ends in a newline");
        assert!(path.starts_with('/'), "not absolute: {path:?}");
        assert_eq!(path.trim(), path, "would be trimmed");
        out.push(path.to_owned());
    }
}

/// nydus-builder's `PrefetchJson` (optimize_prefetch.rs): `version` and `files`, each a
/// `path` with optional `ranges`, for `nydusify optimize --prefetch-files`.
fn read_nydus_optimize(bytes: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct PrefetchJson {
        version: String,
        files: Vec<PrefetchFileJson>,
    }
    #[derive(serde::Deserialize)]
    struct PrefetchFileJson {
        path: String,
        ranges: Option<Vec<[u64; 2]>>,
    }
    let p: PrefetchJson = serde_json::from_slice(bytes).unwrap();
    assert_eq!(p.version, "v1");
    p.files
        .into_iter()
        .map(|f| {
            assert!(f.ranges.is_none());
            f.path
        })
        .collect()
}

/// soci-snapshotter's `--prefetch-files-json` (cmd/soci/commands/internal/prefetch.go): a JSON
/// array of strings, each trimmed, blank ones dropped.
fn read_soci(bytes: &[u8]) -> Vec<String> {
    let list: Vec<String> = serde_json::from_slice(bytes).unwrap();
    list.iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn every_export_format_matches_its_golden_file_and_its_consumers_schema() {
    let dir = tempfile::tempdir().unwrap();
    let input = golden_dir().join("record.jsonl");
    type Reader = fn(&[u8]) -> Vec<String>;
    let cases: &[(&str, &str, Reader)] = &[
        ("stargz", "stargz.jsonl", read_stargz),
        ("paths", "paths.txt", read_paths),
        ("nydus-optimize", "nydus-optimize.json", read_nydus_optimize),
        ("soci", "soci.json", read_soci),
    ];
    let want = golden_paths();
    assert!(want.len() >= 5);
    for (format, golden, read) in cases {
        let out = ok(&[
            "record",
            "export",
            "--format",
            format,
            input.to_str().unwrap(),
        ]);
        let golden_bytes = std::fs::read(golden_dir().join(golden)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&golden_bytes),
            "{format}"
        );
        assert_eq!(read(&out.stdout), want, "{format} read back");
        // --out writes the same bytes.
        let file = dir.path().join(golden);
        ok(&[
            "record",
            "export",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
            input.to_str().unwrap(),
        ]);
        assert_eq!(std::fs::read(&file).unwrap(), golden_bytes);
    }
    // The stargz export is the record itself.
    assert_eq!(
        std::fs::read(golden_dir().join("stargz.jsonl")).unwrap(),
        std::fs::read(&input).unwrap()
    );
}

#[test]
fn paths_export_refuses_a_path_with_a_newline_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.json");
    std::fs::write(
        &record,
        concat!(
            "{\"path\":\"etc/ok\",\"layerIndex\":0}\n",
            "{\"path\":\"etc/two\\nlines\",\"layerIndex\":0}\n"
        ),
    )
    .unwrap();
    for format in ["paths", "soci", "nydus-optimize"] {
        let out = recorder(&[
            "record",
            "export",
            "--format",
            format,
            record.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{format}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(r#""/etc/two\u{a}lines""#) && stderr.contains("newline"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    ok(&[
        "record",
        "export",
        "--format",
        "stargz",
        record.to_str().unwrap(),
    ]);
}

/// Per layer of the agent image, from its tars: (regular files, their bytes), and each
/// regular file's size by path. Whiteouts (`.wh.NAME`, empty regular tar entries) are
/// markers, not files of the image.
fn tar_listing() -> Vec<(u64, u64, BTreeMap<String, u64>)> {
    layers()
        .iter()
        .map(|tar_bytes| {
            let mut archive = tar::Archive::new(tar_bytes.as_slice());
            let mut sizes = BTreeMap::new();
            for e in archive.entries().unwrap() {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let name = path.rsplit('/').next().unwrap_or_default();
                if e.header().entry_type().is_file() && !name.starts_with(".wh.") {
                    sizes.insert(path.trim_start_matches("./").to_owned(), e.size());
                }
            }
            let bytes = sizes.values().sum();
            (sizes.len() as u64, bytes, sizes)
        })
        .collect()
}

/// A record of the agent image (its manifest), some of each layer, with a companion.
fn agent_record(dir: &Path, manifest: &str) -> PathBuf {
    let entries: &[(&str, Option<usize>, u64)] = &[
        ("bin/sh", Some(0), 1_000_000),
        ("app/run.sh", Some(2), 2_000_000),
        ("etc/shadowed", Some(1), 3_000_000),
        ("bin/cat", Some(0), 4_000_000),
        ("app/conf", Some(2), 5_000_000),
        ("opt/real/tool.conf", Some(0), 6_000_000),
        ("app/tree/deep/found.txt", Some(1), 7_000_000),
        ("proc/self/status", None, 8_000_000),
        ("app/<script>alert(1)</script>", Some(2), 9_600_000),
    ];
    let record = dir.join("agent.json");
    let mut r = String::new();
    let mut c = String::new();
    for (i, (p, layer, t)) in entries.iter().enumerate() {
        let layer = layer
            .map(|l| format!(",\"layerIndex\":{l}"))
            .unwrap_or_default();
        r.push_str(&format!(
            "{{\"path\":\"{p}\",\"manifestDigest\":\"{manifest}\"{layer}}}\n"
        ));
        c.push_str(&format!(
            "{{\"index\":{i},\"path\":\"{p}\",\"offsetNs\":{t}}}\n"
        ));
    }
    std::fs::write(&record, r).unwrap();
    std::fs::write(dir.join("agent.json.companion"), c).unwrap();
    record
}

#[test]
fn show_json_equals_sums_from_the_tar_listing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = write_image(&layout);
    let record = agent_record(dir.path(), &manifest);
    let listing = tar_listing();
    let recorded: &[(&str, usize)] = &[
        ("bin/sh", 0),
        ("app/run.sh", 2),
        ("etc/shadowed", 1),
        ("bin/cat", 0),
        ("app/conf", 2),
        ("opt/real/tool.conf", 0),
        ("app/tree/deep/found.txt", 1),
    ];
    // The image as a layout, and the same blobs as a content store with the manifest digest.
    let sources = [
        layout.to_str().unwrap().to_owned(),
        format!("{}@{manifest}", layout.display()),
    ];
    for src in &sources {
        let out = ok(&[
            "record",
            "show",
            record.to_str().unwrap(),
            "--image",
            src,
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["manifest"], manifest.as_str());
        let mut read_total = (0u64, 0u64);
        let mut all_total = (0u64, 0u64);
        for (i, (files, bytes, sizes)) in listing.iter().enumerate() {
            let l = &v["layers"][i];
            assert_eq!(l["total"]["files"], *files, "layer {i} files");
            assert_eq!(l["total"]["bytes"], *bytes, "layer {i} bytes");
            // Regular files of this layer that the record names (app/conf is a symlink).
            let read: Vec<u64> = recorded
                .iter()
                .filter(|(_, layer)| *layer == i)
                .filter_map(|(p, _)| sizes.get(*p).copied())
                .collect();
            assert_eq!(l["read"]["files"], read.len() as u64, "layer {i}");
            assert_eq!(l["read"]["bytes"], read.iter().sum::<u64>(), "layer {i}");
            assert_eq!(l["blobBytes"], layers()[i].len() as u64, "layer {i}");
            read_total.0 += read.len() as u64;
            read_total.1 += read.iter().sum::<u64>();
            all_total.0 += files;
            all_total.1 += bytes;
        }
        assert_eq!(v["layers"][2]["entries"], 3);
        assert_eq!(
            (v["read"]["files"].as_u64(), v["read"]["bytes"].as_u64()),
            (Some(read_total.0), Some(read_total.1))
        );
        assert_eq!(
            (v["total"]["files"].as_u64(), v["total"]["bytes"].as_u64()),
            (Some(all_total.0), Some(all_total.1))
        );
        assert_eq!(
            (v["entries"].as_u64(), v["outside"].as_u64()),
            (Some(9), Some(1))
        );
        assert_eq!(v["lastAccessNs"], 9_600_000);
        // The largest file read is the shell (or what it links to), from layer 0.
        let largest = v["largest"][0]["bytes"].as_u64().unwrap();
        let max = recorded
            .iter()
            .filter_map(|(p, l)| listing[*l].2.get(*p))
            .max()
            .unwrap();
        assert_eq!(largest, *max);
    }
    // The text form names what the user decides by: bytes needed per layer and the time.
    let out = ok(&[
        "record",
        "show",
        record.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bytes needed/all"), "{text}");
    assert!(text.contains("last first access: 0.010 s"), "{text}");
    // A record of another image is refused, naming both manifests.
    let other = dir.path().join("other.json");
    let other_manifest = format!("sha256:{}", "3".repeat(64));
    std::fs::write(
        &other,
        format!(
            "{{\"path\":\"bin/sh\",\"manifestDigest\":\"{other_manifest}\",\"layerIndex\":0}}\n"
        ),
    )
    .unwrap();
    let out = recorder(&[
        "record",
        "show",
        other.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&other_manifest) && stderr.contains(&manifest),
        "{stderr}"
    );
}

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
