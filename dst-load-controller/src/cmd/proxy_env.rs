//! `proxy-env`: the identity directory and environment of a real Linkerd
//! proxy whose control plane is `mock-dst` (started with `--identity-name`,
//! `--identity-token-file` and `--identity-trust-anchors-out`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use crate::mock::proxy_env::{ProxyEnv, write_identity_dir};

/// Flags of `proxy-env`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The mock's gRPC address (its `-a/--addr`): the proxy's Identity,
    /// Destination and Policy, in plaintext (a loopback address).
    #[arg(long, default_value = "127.0.0.1:8086")]
    pub control_addr: SocketAddr,

    /// The proxy's identity name: the mock's `--identity-name`.
    #[arg(long, value_name = "NAME")]
    pub identity_name: String,

    /// The token file: the mock's `--identity-token-file`.
    #[arg(long, value_name = "FILE")]
    pub identity_token_file: PathBuf,

    /// The trust anchors: the file of the mock's `--identity-trust-anchors-out`.
    #[arg(long, value_name = "FILE")]
    pub identity_trust_anchors: PathBuf,

    /// The directory to write the proxy's key (`key.p8`) and CSR (`csr.der`)
    /// into (created; files there are replaced).
    #[arg(long, value_name = "DIR")]
    pub identity_dir: PathBuf,

    /// The workload the proxy names to Policy.
    #[arg(
        long,
        value_name = "JSON",
        default_value = r#"{"ns":"default","pod":"mock-proxy"}"#
    )]
    pub workload: String,

    /// The proxy's inbound listener.
    #[arg(long, default_value = "127.0.0.1:4143")]
    pub inbound_addr: SocketAddr,

    /// The proxy's outbound listener.
    #[arg(long, default_value = "127.0.0.1:4140")]
    pub outbound_addr: SocketAddr,

    /// The proxy's admin server (`/ready`, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:4191")]
    pub proxy_admin_addr: SocketAddr,

    /// The proxy's control listener.
    #[arg(long, default_value = "127.0.0.1:4190")]
    pub control_listen_addr: SocketAddr,

    /// The networks whose addresses the proxy asks `GetProfile` of (a
    /// ClusterIP's profile can split its traffic): Linkerd's cluster
    /// networks, as the injector sets them. Comma-separated CIDRs.
    #[arg(
        long,
        value_name = "CIDRS",
        value_delimiter = ',',
        default_value = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
    )]
    pub profile_networks: Vec<ipnet::IpNet>,
}

impl Args {
    /// Every check that needs no side effect: the files the proxy will read.
    pub fn validate(&self) -> Result<(), String> {
        self.env().map(drop)
    }

    fn env(&self) -> Result<ProxyEnv, String> {
        if !self.control_addr.ip().is_loopback() {
            return Err(format!(
                "--control-addr {} is not a loopback address; the proxy talks plaintext to a loopback control plane only",
                self.control_addr
            ));
        }
        if self.identity_name.is_empty() || self.identity_name.contains(char::is_whitespace) {
            return Err(format!(
                "--identity-name '{}' is not a DNS name; give the mock's --identity-name",
                self.identity_name
            ));
        }
        match std::fs::metadata(&self.identity_token_file) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => {
                return Err(format!(
                    "--identity-token-file {} is empty; give the mock's --identity-token-file",
                    self.identity_token_file.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot read --identity-token-file {}: {e}; give the mock's --identity-token-file",
                    self.identity_token_file.display()
                ));
            }
        }
        let pem = std::fs::read_to_string(&self.identity_trust_anchors).map_err(|e| {
            format!(
                "cannot read --identity-trust-anchors {}: {e}; start mock-dst with --identity-trust-anchors-out FILE and give that FILE",
                self.identity_trust_anchors.display()
            )
        })?;
        if x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .ok()
            .and_then(|(_, p)| p.parse_x509().ok().map(drop))
            .is_none()
        {
            return Err(format!(
                "--identity-trust-anchors {} holds no PEM certificate",
                self.identity_trust_anchors.display()
            ));
        }
        if !crate::mock::policy::json_workload(&self.workload) {
            return Err(format!(
                "--workload '{}' is not JSON with \"ns\" and \"pod\" (as the injector writes it, and Linkerd's policy controller reads it); give e.g. '{{\"ns\":\"default\",\"pod\":\"mock-proxy\"}}'",
                self.workload
            ));
        }
        Ok(ProxyEnv {
            control: self.control_addr,
            identity_name: self.identity_name.clone(),
            token_file: absolute(&self.identity_token_file),
            trust_anchors_pem: pem,
            identity_dir: absolute(&self.identity_dir),
            workload: self.workload.clone(),
            inbound: self.inbound_addr,
            outbound: self.outbound_addr,
            admin: self.proxy_admin_addr,
            control_listen: self.control_listen_addr,
            profile_networks: self.profile_networks.clone(),
        })
    }

    /// Writes the identity directory and prints the environment.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let env = self.env().map_err(anyhow::Error::msg)?;
        write_identity_dir(&env.identity_dir, &env.identity_name)?;
        print!("{}", env.shell());
        Ok(ExitCode::SUCCESS)
    }
}

/// `p` from the root, so that the proxy finds it from any directory.
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
