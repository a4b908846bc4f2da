//! Merging several runs of one image into one prefetch order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{ok, recorder};

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
