//! What `client`, `run` and `report` share at the end of a run: the
//! documented exit status of their verdicts and the verdict table (the gate
//! flags `--slo`, `--min-samples`, `--report`, `--junit`, `--html` are
//! `cmd::flags::GateArgs`; what is judged is [`crate::measurements`]).

use std::process::ExitCode;

use crate::slo::{self, Verdict};

/// 0 when every verdict passed, 3 when one failed.
pub fn exit_status(verdicts: &[Verdict]) -> ExitCode {
    if verdicts.iter().all(|v| v.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(slo::EXIT_SLO_FAILED)
    }
}

/// The verdict lines of a summary table.
pub fn verdict_table(verdicts: &[Verdict]) -> String {
    let mut t = String::new();
    for v in verdicts {
        let verdict = if v.pass { "PASS" } else { "FAIL" };
        t += &format!("  SLO {verdict} {}", v.slo);
        if let Some(r) = &v.reason {
            t += &format!(" ({r})");
        }
        t += "\n";
    }
    t
}
