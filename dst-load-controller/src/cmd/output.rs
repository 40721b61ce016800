//! Where the commands' files and text go. A file flag given `-` (`--report -`,
//! `--junit -`, `--html -`) writes to standard output, as `jq`, `kubectl` and
//! most tools read it; the text a command prints for people then goes to
//! standard error, so that standard output holds the file alone.

use std::{
    fmt::Display,
    io::Write,
    path::{Path, PathBuf},
};

/// The path that means standard output.
pub const STDOUT: &str = "-";

/// Whether `path` is `-`.
pub fn is_stdout(path: &Path) -> bool {
    path == Path::new(STDOUT)
}

/// A command's file flags: each flag's name and the path it was given.
pub type Files<'a> = [(&'static str, Option<&'a PathBuf>)];

/// At most one of the file flags may be `-`: two files on one standard
/// output could not be told apart.
pub fn check_one_stdout(files: &Files<'_>) -> Result<(), String> {
    let on_stdout: Vec<&str> = files
        .iter()
        .filter(|(_, p)| p.is_some_and(|p| is_stdout(p)))
        .map(|(flag, _)| *flag)
        .collect();
    if on_stdout.len() > 1 {
        return Err(format!(
            "{} are all `-`: only one file can go to standard output; give the others a path",
            on_stdout.join(" and ")
        ));
    }
    Ok(())
}

/// Checks every file flag before the command does anything: at most one is
/// `-` ([`check_one_stdout`]), and every other can be written (its folder
/// exists, it is not a folder, the folder or the file takes writes), so
/// that a run is not lost to a typo in a path at its end. Nothing is left
/// behind: a folder is probed with a file created and removed at once.
pub fn check_files(files: &Files<'_>) -> Result<(), String> {
    check_one_stdout(files)?;
    for (flag, path) in files {
        if let Some(path) = path.filter(|p| !is_stdout(p)) {
            check_writable(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Checks a folder flag before the command does anything: `dir` is a
/// folder that takes new files, or does not exist and its parent does (it
/// is made at the end).
pub fn check_dir(flag: &str, dir: &Path) -> Result<(), String> {
    let e = |why: String| format!("{flag} {}: {why}", dir.display());
    if is_stdout(dir) {
        return Err(e("is a folder flag: give a folder, not `-`".into()));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(e("is a file; give a folder".into()));
    }
    let probe_in = if dir.is_dir() {
        dir
    } else {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    };
    if !probe_in.is_dir() {
        return Err(e(format!(
            "the folder {} does not exist; create it or give another path",
            probe_in.display()
        )));
    }
    probe(probe_in).map_err(e)
}

/// Why `path` could not be written, if it could not.
fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a folder; give a file path in it".into());
    }
    if path.exists() {
        // Opened for writing without truncating: the file is unchanged.
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot be written ({e})"));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(format!(
            "the folder {} does not exist; create it or give another path",
            folder.display()
        ));
    }
    probe(folder)
}

/// Whether `folder` takes new files: a file created there and removed at once.
fn probe(folder: &Path) -> Result<(), String> {
    let probe = folder.join(format!(".dst-load-controller-probe-{}", std::process::id()));
    std::fs::File::create_new(&probe)
        .map(|_| {
            let _ = std::fs::remove_file(&probe);
        })
        .map_err(|e| format!("the folder {} takes no new files ({e})", folder.display()))
}

/// Writes `contents` to `path`, or to standard output for `-`. The error
/// names the flag.
pub fn write(flag: &str, path: &Path, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
    let result = if is_stdout(path) {
        let mut out = std::io::stdout().lock();
        out.write_all(contents.as_ref())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
    } else {
        std::fs::write(path, contents)
    };
    result.map_err(|e| anyhow::anyhow!("cannot write {flag} {}: {e}", path.display()))
}

/// A report as written: the tool's version and the command line that made
/// it (credentials in URLs hidden) ahead of the report's own fields, so
/// that a report says what made it and how to make it again.
#[derive(serde::Serialize)]
pub struct Stamped<'a, T: serde::Serialize> {
    /// `--version`'s string, with the git commit when built from a checkout.
    pub version: &'static str,
    /// The arguments the process was started with.
    pub args: Vec<String>,
    /// The report.
    #[serde(flatten)]
    pub report: &'a T,
}

impl<'a, T: serde::Serialize> Stamped<'a, T> {
    /// `report`, stamped with this process's version and arguments.
    pub fn new(report: &'a T) -> Self {
        Self {
            version: crate::VERSION,
            args: args(),
            report,
        }
    }
}

/// The arguments this process was started with, credentials in URLs hidden.
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .map(|a| {
            if a.contains("://") {
                crate::report::redact(&a)
            } else {
                a
            }
        })
        .collect()
}

/// This process's command line as a shell would take it back (arguments
/// with spaces or quotes single-quoted), credentials in URLs hidden.
pub fn command_line() -> String {
    let quoted = args().into_iter().map(|a| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    });
    std::iter::once("dst-load-controller".to_string())
        .chain(quoted)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Says on standard error where `what` went (nothing for standard output,
/// where the file speaks for itself).
pub fn written(what: &str, path: &Path) {
    if !is_stdout(path) {
        eprintln!("{what} {}", path.display());
    }
}

/// The text a command prints for people: on standard output, or on standard
/// error when a file flag took standard output.
#[derive(Clone, Copy, Debug, Default)]
pub struct Console {
    to_stderr: bool,
}

impl Console {
    /// The console of a command whose file flags are `files`.
    pub fn beside(files: &Files<'_>) -> Self {
        Self {
            to_stderr: files.iter().any(|(_, p)| p.is_some_and(|p| is_stdout(p))),
        }
    }

    /// Whether the text goes to standard error.
    pub fn on_stderr(self) -> bool {
        self.to_stderr
    }

    /// Prints `text` as is.
    pub fn print(self, text: impl Display) {
        if self.to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }

    /// Prints `text` and a newline.
    pub fn println(self, text: impl Display) {
        self.print(format_args!("{text}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_flag_at_most_takes_standard_output() {
        let dash = PathBuf::from("-");
        let file = PathBuf::from("r.json");
        assert!(check_one_stdout(&[("--report", Some(&dash)), ("--junit", Some(&file))]).is_ok());
        assert!(check_one_stdout(&[("--report", None), ("--junit", None)]).is_ok());
        let e = check_one_stdout(&[
            ("--report", Some(&dash)),
            ("--junit", Some(&dash)),
            ("--html", None),
        ])
        .unwrap_err();
        assert!(e.starts_with("--report and --junit are all `-`: only one file"));
        assert!(Console::beside(&[("--junit", None), ("--report", Some(&dash))]).on_stderr());
        assert!(!Console::beside(&[("--report", Some(&file)), ("--junit", None)]).on_stderr());
        // `./-` is a file named `-`, as with other tools.
        assert!(!is_stdout(Path::new("./-")));
    }

    #[test]
    fn unwritable_paths_are_refused_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("output-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let existing = dir.join("old.json");
        std::fs::write(&existing, "kept").unwrap();
        let fresh = dir.join("new.json");
        let missing = PathBuf::from("/nonexistent/dir/x.json");
        let check = |flag, p: &PathBuf| check_files(&[(flag, Some(p))]);
        assert_eq!(check("--report", &fresh), Ok(()));
        assert_eq!(check("--report", &existing), Ok(()));
        assert_eq!(check("--report", &PathBuf::from("-")), Ok(()));
        assert_eq!(
            check("--report", &missing).unwrap_err(),
            "--report /nonexistent/dir/x.json: the folder /nonexistent/dir does not exist; create it or give another path"
        );
        assert_eq!(
            check("--junit", &dir).unwrap_err(),
            format!(
                "--junit {}: is a folder; give a file path in it",
                dir.display()
            )
        );
        // Checking wrote nothing: the new file is not there, the old one
        // unchanged, no probe left.
        assert!(!fresh.exists());
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "kept");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
