//! Names the build for `aula_build_info` (see `src/process_metrics.rs`): the compiler's
//! version, and the git commit when the build is given one in `AULA_GIT_COMMIT` (CI
//! sets it; reading `.git` here would rebuild the crate at every commit, and a source
//! tarball has none).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=AULA_GIT_COMMIT");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(output) = Command::new(rustc).arg("--version").output() {
        if output.status.success() {
            // `rustc 1.95.0 (abcdef012 2026-11-05)`: the version number.
            let text = String::from_utf8_lossy(&output.stdout);
            if let Some(version) = text.split_whitespace().nth(1) {
                println!("cargo:rustc-env=AULA_BUILD_RUSTC={version}");
            }
        }
    }
    if let Ok(commit) = std::env::var("AULA_GIT_COMMIT") {
        let commit = commit.trim();
        if !commit.is_empty() && commit.chars().all(|c| c.is_ascii_alphanumeric()) {
            println!("cargo:rustc-env=AULA_BUILD_GIT_COMMIT={commit}");
        }
    }
}
