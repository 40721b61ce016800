//! Destinations that fill and churn themselves: endpoints drawn from a CIDR,
//! and oscillation between two sizes on the same seeded schedule churn uses.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::handle::Handle;
use crate::{
    schedule::{self, Oscillation, Schedule},
    target::Authority,
};

/// The `n`th usable address of `net` (the network address is skipped), with `port`.
pub fn nth_endpoint(net: &IpNet, n: u64, port: u16) -> Option<SocketAddr> {
    let offset = n.checked_add(1)?;
    let ip = match net {
        IpNet::V4(v4) => {
            let base = u32::from(v4.network()) as u64;
            let size = 1u64 << (32 - v4.prefix_len());
            (offset < size)
                .then(|| std::net::IpAddr::from(std::net::Ipv4Addr::from((base + offset) as u32)))?
        }
        IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            let bits = 128 - u32::from(v6.prefix_len());
            if bits < 64 && u128::from(offset) >= (1u128 << bits) {
                return None;
            }
            std::net::IpAddr::from(std::net::Ipv6Addr::from(base + u128::from(offset)))
        }
    };
    Some(SocketAddr::new(ip, port))
}

/// The first `count` endpoints of `net` on `port`.
pub fn endpoints(net: &IpNet, count: u32, port: u16) -> Vec<SocketAddr> {
    (0..u64::from(count))
        .map_while(|i| nth_endpoint(net, i, port))
        .collect()
}

/// `DESTINATION=CIDR:COUNT` (fixed) or `DESTINATION=CIDR:MIN..MAX` (oscillating).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedDst {
    /// The destination.
    pub authority: Authority,
    /// Where its addresses come from.
    pub cidr: IpNet,
    /// Its size (the low end when oscillating).
    pub min: u32,
    /// The high end; equal to `min` for a fixed destination.
    pub max: u32,
}

/// The form `--generate` takes.
const GENERATE_HINT: &str = "expected DESTINATION=CIDR:COUNT or DESTINATION=CIDR:MIN..MAX, e.g. foo.ns.svc.cluster.local:8080=10.1.0.0/16:10..200";

/// A `--generate` value that generates nothing.
#[derive(Debug, thiserror::Error)]
#[error("'{given}': {problem}")]
pub struct GenerateError {
    /// As given.
    pub given: String,
    /// What is wrong.
    pub problem: GenerateProblem,
}

/// What is wrong with a `--generate` value.
#[derive(Debug, thiserror::Error)]
pub enum GenerateProblem {
    /// Not of the form.
    #[error("{GENERATE_HINT}")]
    Form,
    /// The destination is no authority.
    #[error(transparent)]
    Authority(#[from] crate::target::TargetError),
    /// The CIDR is none.
    #[error("invalid CIDR '{cidr}': {why}")]
    Cidr {
        /// As given.
        cidr: String,
        /// Why.
        why: ipnet::AddrParseError,
    },
    /// A size that is no count.
    #[error("'{0}' is not a count; {GENERATE_HINT}")]
    Count(String),
    /// A range upside down.
    #[error("the minimum {min} is above the maximum {max}")]
    Range {
        /// As given.
        min: u32,
        /// As given.
        max: u32,
    },
    /// A CIDR too small for the endpoints.
    #[error("{cidr} has fewer than {max} addresses")]
    Small {
        /// As given.
        cidr: IpNet,
        /// Endpoints asked for.
        max: u32,
    },
}

impl FromStr for GeneratedDst {
    type Err = GenerateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem| GenerateError {
            given: s.to_string(),
            problem,
        };
        let (dst, rest) = s
            .split_once('=')
            .ok_or_else(|| bad(GenerateProblem::Form))?;
        let authority: Authority = dst
            .parse()
            .map_err(|e| bad(GenerateProblem::Authority(e)))?;
        let (cidr, size) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad(GenerateProblem::Form))?;
        let cidr: IpNet = cidr.parse().map_err(|why| {
            bad(GenerateProblem::Cidr {
                cidr: cidr.to_string(),
                why,
            })
        })?;
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| bad(GenerateProblem::Count(v.to_string())))
        };
        let (min, max) = match size.split_once("..") {
            Some((lo, hi)) => (num(lo)?, num(hi)?),
            None => (num(size)?, num(size)?),
        };
        if min > max {
            return Err(bad(GenerateProblem::Range { min, max }));
        }
        if nth_endpoint(&cidr, u64::from(max).saturating_sub(1), authority.port()).is_none()
            && max > 0
        {
            return Err(bad(GenerateProblem::Small { cidr, max }));
        }
        Ok(Self {
            authority,
            cidr,
            min,
            max,
        })
    }
}

impl GeneratedDst {
    /// Whether it oscillates.
    pub fn oscillates(&self) -> bool {
        self.min != self.max
    }

    /// Its endpoints at size `n`.
    pub fn endpoints(&self, n: u32) -> Vec<SocketAddr> {
        endpoints(&self.cidr, n, self.authority.port())
    }
}

/// Oscillates `dst` on `handle` following the seeded schedule of destination
/// `index`, until the cycles are done or `stop`.
pub async fn oscillate(
    handle: Handle,
    dst: GeneratedDst,
    timing: Oscillation,
    seed: u64,
    index: u32,
    stop: CancellationToken,
) {
    let osc = Oscillation {
        min: dst.min,
        max: dst.max,
        ..timing
    };
    play(osc, (seed, index), Duration::ZERO, &stop, |step, lag| {
        let change = handle.set(&dst.authority, dst.endpoints(step.replicas));
        tracing::debug!(destination = %dst.authority, size = step.replicas, ?lag, added = change.added.len(), removed = change.removed.len(), "oscillated");
    })
    .await;
}

/// Plays the schedule of `osc` seeded as (seed, destination index) from
/// `delay` in, calling `step` at each step with how late it was, until the
/// cycles are done or `stop`.
async fn play(
    osc: Oscillation,
    (seed, index): (u64, u32),
    delay: Duration,
    stop: &CancellationToken,
    mut step: impl FnMut(schedule::Step, Duration),
) {
    let start = tokio::time::Instant::now() + delay;
    let result: Result<(), std::convert::Infallible> =
        schedule::drive(Schedule::new(osc, seed, index), start, stop, |s, lag| {
            step(s, lag);
            async { Ok(()) }
        })
        .await;
    let Ok(()) = result;
}

/// Rolls `dst` on `handle` the way a rolling restart does, every hold of
/// `timing` (jittered, seeded as destination `index`) from one hold in:
/// each roll replaces every one of its `min` addresses with the next ones
/// of its CIDR (wrapping around), until the cycles are done or `stop`.
pub async fn restart(
    handle: Handle,
    dst: GeneratedDst,
    timing: Oscillation,
    seed: u64,
    index: u32,
    stop: CancellationToken,
) {
    // Every roll one min hold after the previous, as churn's restarts.
    let osc = Oscillation {
        min: dst.min,
        max: dst.min,
        max_hold: timing.min_hold,
        ..timing
    };
    let count = u64::from(dst.min);
    if count == 0 {
        return;
    }
    let port = dst.authority.port();
    let mut generation = 0u64;
    play(osc, (seed, index), timing.min_hold, &stop, |_, lag| {
        generation += 1;
        if nth_endpoint(&dst.cidr, (generation + 1) * count - 1, port).is_none() {
            generation = 0;
        }
        let addrs: Vec<SocketAddr> = (0..count)
            .filter_map(|j| nth_endpoint(&dst.cidr, generation * count + j, port))
            .collect();
        let change = handle.set(&dst.authority, addrs);
        tracing::debug!(destination = %dst.authority, generation, ?lag, added = change.added.len(), removed = change.removed.len(), "rolled");
    })
    .await;
}

/// Deletes `dst` from `handle` and brings it back, as a service that is
/// deleted and re-created: alive for the min hold of `timing` (from the
/// start), gone for the max hold, jittered and seeded as destination
/// `index`, until the cycles are done or `stop`. It returns with its first
/// `min` addresses.
pub async fn lifecycle(
    handle: Handle,
    dst: GeneratedDst,
    timing: Oscillation,
    seed: u64,
    index: u32,
    stop: CancellationToken,
) {
    let osc = Oscillation {
        min: dst.min,
        max: 0,
        ..timing
    };
    play(osc, (seed, index), timing.min_hold, &stop, |step, lag| {
        if step.replicas == 0 {
            handle.delete(&dst.authority);
        } else {
            handle.set(&dst.authority, dst.endpoints(step.replicas));
        }
        tracing::debug!(destination = %dst.authority, alive = step.replicas > 0, ?lag, "lifecycle");
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_addresses_from_the_cidr() {
        let net: IpNet = "10.1.0.0/30".parse().unwrap();
        assert_eq!(
            endpoints(&net, 5, 80),
            [
                "10.1.0.1:80".parse::<SocketAddr>().unwrap(),
                "10.1.0.2:80".parse().unwrap(),
                "10.1.0.3:80".parse().unwrap()
            ]
        );
        let v6: IpNet = "fd00::/120".parse().unwrap();
        assert_eq!(endpoints(&v6, 2, 80)[1], "[fd00::2]:80".parse().unwrap());
    }

    #[test]
    fn parses_fixed_and_oscillating_specs() {
        let g: GeneratedDst = "foo.ns.svc.cluster.local:8080=10.1.0.0/16:10..200"
            .parse()
            .unwrap();
        assert_eq!((g.min, g.max, g.oscillates()), (10, 200, true));
        assert_eq!(g.endpoints(3)[2], "10.1.0.3:8080".parse().unwrap());
        let g: GeneratedDst = "foo.ns.svc.cluster.local:8080=10.1.0.0/16:7"
            .parse()
            .unwrap();
        assert_eq!((g.min, g.max, g.oscillates()), (7, 7, false));
        for bad in [
            "foo.ns.svc.cluster.local:8080",
            "foo.ns.svc.cluster.local:8080=10.1.0.0:7",
            "foo.ns.svc.cluster.local:8080=10.1.0.0/16:9..2",
            "foo.ns.svc.cluster.local:8080=10.1.0.0/30:5",
            "foo=10.1.0.0/16:5",
        ] {
            assert!(bad.parse::<GeneratedDst>().is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn oscillation_follows_the_schedule() {
        let mock = super::super::MockDestination::new(Default::default(), &mut Default::default());
        let handle = mock.handle();
        let dst: GeneratedDst = "foo.ns.svc.cluster.local:80=10.0.0.0/24:1..4"
            .parse()
            .unwrap();
        handle.set(&dst.authority, dst.endpoints(dst.min));
        let timing = Oscillation {
            min: 0,
            max: 0,
            min_hold: std::time::Duration::from_secs(10),
            max_hold: std::time::Duration::from_secs(20),
            jitter: schedule::Jitter::Percent(0),
            cycles: 1,
        };
        let mut feed = handle.changes();
        let task = tokio::spawn(oscillate(
            handle.clone(),
            dst.clone(),
            timing,
            1,
            0,
            CancellationToken::new(),
        ));
        let (a, up) = feed.recv().await.unwrap();
        assert_eq!(a, dst.authority);
        assert_eq!(up.added.len(), 3);
        let t0 = tokio::time::Instant::now();
        let (_, down) = feed.recv().await.unwrap();
        assert_eq!(down.removed.len(), 3);
        assert_eq!(t0.elapsed(), std::time::Duration::from_secs(20));
        task.await.unwrap();
        assert_eq!(handle.get(&dst.authority).unwrap(), dst.endpoints(1));
    }
}
