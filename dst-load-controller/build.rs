//! Stamps the version that `--version` and every report carry
//! (`DST_VERSION`): the crate's version and, when built from a git checkout,
//! its commit (`-dirty` when tracked files had changes). `DST_GIT_COMMIT`
//! names the commit where there is no checkout (a container build).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DST_GIT_COMMIT");
    // Any source change may make the tree dirty.
    println!("cargo:rerun-if-changed=src");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = std::env::var("DST_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit);
    let long = match commit {
        Some(c) => format!("{version} ({c})"),
        None => version,
    };
    println!("cargo:rustc-env=DST_VERSION={long}");
}

/// The checkout's commit, or `None` outside one.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        // A commit, a checkout or an index change moves them.
        for f in ["HEAD", "index", "packed-refs", "refs/heads"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
    }
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}
