//! Bundles JsSIP from `node_modules` (pinned in package-lock.json) into OUT_DIR for
//! `include_str!`: `npm ci --prefix plugins/softphone` first (the README's commands do).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("jssip.js");
    for f in [
        "bundle.mjs",
        "package-lock.json",
        "node_modules/jssip/package.json",
    ] {
        println!("cargo:rerun-if-changed={}", here.join(f).display());
    }
    if !here.join("node_modules/jssip").exists() || !here.join("node_modules/esbuild").exists() {
        panic!(
            "{} has no node_modules: run `npm ci --prefix plugins/softphone` (JsSIP and \
             esbuild, pinned in its package-lock.json)",
            here.display()
        );
    }
    let status = Command::new("node")
        .current_dir(&here)
        .arg("bundle.mjs")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run node to bundle JsSIP: {e}"));
    assert!(status.success(), "bundling JsSIP failed ({status})");
}
