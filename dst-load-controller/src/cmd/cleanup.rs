//! `cleanup`'s front door: its flags and the run that deletes exactly what
//! churn created in a namespace (`crate::cleanup`).

use std::process::ExitCode;

use super::flags::KubeArgs;
use crate::cleanup::{connect_and_cleanup, connect_and_plan};

/// Flags of `cleanup`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The namespace churn used.
    #[arg(short = 'n', long, default_value = "dst-load-test")]
    pub namespace: String,

    /// Scale this Deployment (the churn that creates the objects) to zero and
    /// wait for its pods to exit before deleting anything, so that churn
    /// cannot re-create what cleanup deletes. The chart's pre-delete hook
    /// passes its churn Deployment. A missing Deployment is not an error.
    #[arg(long, value_name = "NAME")]
    pub stop_deployment: Option<String>,

    /// List what would be deleted (every object churn owns in the namespace,
    /// and whether the namespace goes too) and delete nothing; with
    /// --stop-deployment, stop nothing either.
    #[arg(long)]
    pub dry_run: bool,

    /// How long to wait for the objects to disappear.
    #[arg(long, default_value = "2m")]
    pub timeout: humantime::Duration,

    #[command(flatten)]
    pub kube: KubeArgs,
}

impl Args {
    /// Checks the Kubernetes client flags.
    pub fn validate(&self) -> Result<(), String> {
        crate::labels::check_namespace("--namespace", &self.namespace)
            .map_err(|e| e.to_string())?;
        self.kube.validate()
    }

    /// Deletes and waits.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        if self.dry_run {
            let plan = connect_and_plan(
                &self.kube.settings(),
                &self.namespace,
                crate::shutdown::on_signal(),
            )
            .await?;
            println!("{plan}");
            return Ok(ExitCode::SUCCESS);
        }
        let stop = self.stop_deployment.as_deref();
        let (stopped, report) = connect_and_cleanup(
            &self.kube.settings(),
            &self.namespace,
            stop,
            self.timeout.into(),
            crate::shutdown::on_signal(),
        )
        .await?;
        if let Some(name) = stop.filter(|_| stopped) {
            println!("stopped deployment {name}");
        }
        println!("{report}");
        Ok(ExitCode::SUCCESS)
    }
}
