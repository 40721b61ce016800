//! The Linkerd versions the local control plane can run: asking for one
//! that is not known, whose archives are missing, or whose archives do not
//! match their checksums is a usage error (exit 2) that names what is
//! there, before anything is built or started.

use std::{path::Path, process::Command};

/// A sources folder holding fake archives of stable-2.14.1 and its proxy
/// API, listed in SHA256SUMS (the 2.14.1 archive's sum is `good` or not).
fn sources(dir: &Path, good: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        ("linkerd2-stable-2.14.1.tar.gz", "not really a tarball\n"),
        ("linkerd2-proxy-api-v0.11.0.tar.gz", "nor this\n"),
    ];
    let mut sums = String::new();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
        let out = Command::new("sha256sum")
            .arg(dir.join(name))
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        let sum = if good || !name.starts_with("linkerd2-stable") {
            sum
        } else {
            "0".repeat(64)
        };
        sums += &format!("{sum}  {name}\n");
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

fn hack(script: &str, sources: &Path, args: &[&str]) -> (Option<i32>, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(repo.join("hack").join(script))
        .args(args)
        .env("LINKERD_SOURCES", sources)
        // Nothing may be built: an empty cache would show it.
        .env("DST_LOAD_CACHE", sources.join("cache"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn unknown_missing_or_damaged_linkerd_versions_are_refused_before_anything_starts() {
    let dir = std::env::temp_dir().join(format!("dst-linkerd-sources-{}", std::process::id()));
    sources(&dir, true);
    let (code, err) = hack("build-deps.sh", &dir, &["linkerd@stable-9.9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown Linkerd version 'stable-9.9': known are edge-26.8.3 stable-2.14.2 stable-2.14.1")
            && err.contains("archives present in") && err.contains(": stable-2.14.1)"),
        "{err}"
    );
    // Known, but its archive is not there.
    let (code, err) = hack("build-deps.sh", &dir, &["linkerd@stable-2.14.2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("Linkerd stable-2.14.2 needs linkerd2-stable-2.14.2.tar.gz and linkerd2-proxy-api-v0.11.0.tar.gz")
            && err.contains("archives present: stable-2.14.1"),
        "{err}"
    );
    // There, but not what SHA256SUMS says.
    sources(&dir, false);
    let (code, err) = hack("build-deps.sh", &dir, &["linkerd@stable-2.14.1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("checksum mismatch for linkerd2-stable-2.14.1.tar.gz"),
        "{err}"
    );
    // The control plane refuses the same way, and starts nothing.
    let (code, err) = hack(
        "local-cluster.sh",
        &dir,
        &["--name", "vbad", "up", "--linkerd", "stable-9.9"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown Linkerd version 'stable-9.9'"),
        "{err}"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert!(!repo.join(".local-clusters/vbad").exists());
    let (code, err) = hack(
        "local-cluster.sh",
        &dir,
        &["--name", "vbad", "up", "--linkerd"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--linkerd needs a VERSION"), "{err}");
    // Nothing was built.
    assert!(!dir.join("cache").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
