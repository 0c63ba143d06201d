//! Stamps the `ebb` binary with its git commit and target triple, for `ebb version`, and the
//! compiler's version, for `keda_build_info`.
//! `EBB_GIT_COMMIT` overrides the commit (an image build has no `.git`); it is cut to twelve
//! digits, so the full commit can be given, as the image's revision label has it.

use std::process::Command;

fn main() {
    // Twelve hex digits, also when the full commit is given (an image's revision label).
    let commit = std::env::var("EBB_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .map(|c| c.chars().take(12).collect::<String>());
    println!(
        "cargo:rustc-env=EBB_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=EBB_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        // "rustc 1.95.0 (59807616e 2026-04-14)" -> "rustc1.95.0", as Go writes "go1.24.1".
        .and_then(|v| v.split_whitespace().nth(1).map(|n| format!("rustc{n}")))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=EBB_RUSTC_VERSION={rustc_version}");
    println!("cargo:rerun-if-env-changed=EBB_GIT_COMMIT");
    // The commit changes with HEAD (and with the branch it points at). Asked of git, so that a
    // worktree (whose `.git` is a file) is followed too: its HEAD is in its own git directory,
    // the branches in the common one.
    for (question, paths) in [
        ("--absolute-git-dir", &["HEAD"][..]),
        ("--git-common-dir", &["refs/heads", "packed-refs"][..]),
    ] {
        let Some(dir) = git(&["rev-parse", question]) else {
            continue;
        };
        // Relative answers are relative to the package's directory, the script's own.
        let dir = std::env::current_dir().unwrap_or_default().join(dir);
        for path in paths {
            let path = dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// What git answers, trimmed, when it answers.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
}
