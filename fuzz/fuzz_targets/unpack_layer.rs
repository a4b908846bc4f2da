//! The unpacker, as root, into a fresh directory with a 16 MiB budget: any tar unpacks or
//! fails, never panics, and never writes outside its directory (checked: the directory's
//! parent holds nothing else afterwards).
#![no_main]

use libfuzzer_sys::fuzz_target;
use recorder::sandbox::{UnpackBudget, unpack_layer_within};

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("temp dir");
    let target = outer.path().join("layer");
    std::fs::create_dir(&target).expect("target dir");
    let _ = unpack_layer_within(data, &target, &mut UnpackBudget::new(16 << 20));
    let names: Vec<_> = std::fs::read_dir(outer.path())
        .expect("read outer")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["layer"], "something was written beside the target");
});
