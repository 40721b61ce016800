//! The most one process is asked to hold: every size a flag, a scenario file
//! or the mock's control API takes is checked against these bounds before
//! anything is allocated, so that a typo is a usage error rather than an
//! allocation failure minutes into a run. The figures come from measured
//! costs (BENCHMARKS.md) and from the protocols. Pure.

/// Streams one client process opens in all (Get and GetProfile). A stream
/// costs the client about 8 KB (7.6-7.9 KB measured at 100,000 streams), so
/// this bound is about 8 GB; larger loads are spread over several clients.
pub const MAX_STREAMS: u64 = 1_000_000;

/// HTTP/2 connections of one client: each takes a local TCP port towards the
/// one destination address, and there are 65,535 ports.
pub const MAX_CONNECTIONS: u32 = 65_535;

/// Endpoints of one mock destination. The mock sends a destination's
/// addresses in one `Add`, and with the longest names (an IPv6 address, a
/// 63-character service and namespace) this many stay within gRPC's
/// default 4 MiB message limit, which clients (ours and the proxy) enforce.
pub const MAX_ENDPOINTS_PER_DESTINATION: u32 = 10_000;

/// Destinations the mock's control API creates: each holds its endpoints,
/// its feed and its streams' places.
pub const MAX_DESTINATIONS: usize = 10_000;

/// Updates queued per mock stream (its `--stream-queue-capacity`): a
/// queue this long of the largest updates is already gigabytes.
pub const MAX_STREAM_QUEUE: usize = 1_000_000;

/// The shortest cycle of an oscillating mock destination (its two holds
/// together): shorter would only spin the mock's CPU.
pub const MIN_OSCILLATION_CYCLE: std::time::Duration = std::time::Duration::from_millis(1);

/// A client's load past what one process holds; each names the flag (or
/// the scenario file's key) to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// More streams per service than one client holds.
    #[error(
        "{flag} {streams_per_service} is more than one client holds: at most {MAX_STREAMS} streams (about 8 KB each); spread a larger load over several clients"
    )]
    StreamsPerService {
        /// What sets it.
        flag: String,
        /// As given.
        streams_per_service: u64,
    },
    /// More connections than local ports.
    #[error(
        "{flag} {connections} is more than one client can open: at most {MAX_CONNECTIONS} (one local TCP port each)"
    )]
    Connections {
        /// What sets it.
        flag: String,
        /// As given.
        connections: u32,
    },
    /// More streams in all than one client holds.
    #[error(
        "{services} services x {streams_per_service} streams is {streams} streams, more than one client holds: at most {MAX_STREAMS} (about 8 KB each); lower {flag} or spread the services over several clients"
    )]
    Streams {
        /// What sets the streams per service.
        flag: String,
        /// Services.
        services: u64,
        /// Streams per service.
        streams_per_service: u64,
        /// Their product.
        streams: u64,
    },
    /// More connections than streams to carry.
    #[error(
        "{flag} {connections} is more than the {streams} streams it would carry: give at most {streams}"
    )]
    IdleConnections {
        /// What sets the connections.
        flag: String,
        /// As given.
        connections: u32,
        /// Streams in all.
        streams: u64,
    },
}

/// Checks a client's load against [`MAX_STREAMS`] and [`MAX_CONNECTIONS`].
/// `streams_flag` and `connections_flag` name what the user changes in the
/// message (`--streams-per-service`, or a scenario file's key).
pub fn check_load(load: Load, streams_flag: &str, connections_flag: &str) -> Result<(), LoadError> {
    let Load {
        streams_per_service,
        services,
        connections,
    } = load;
    if streams_per_service > MAX_STREAMS {
        return Err(LoadError::StreamsPerService {
            flag: streams_flag.to_string(),
            streams_per_service,
        });
    }
    if u64::from(connections) > u64::from(MAX_CONNECTIONS) {
        return Err(LoadError::Connections {
            flag: connections_flag.to_string(),
            connections,
        });
    }
    let Some(services) = services else {
        return Ok(());
    };
    let streams = streams_per_service.saturating_mul(services);
    if streams > MAX_STREAMS {
        return Err(LoadError::Streams {
            flag: streams_flag.to_string(),
            services,
            streams_per_service,
            streams,
        });
    }
    if u64::from(connections) > streams {
        return Err(LoadError::IdleConnections {
            flag: connections_flag.to_string(),
            connections,
            streams,
        });
    }
    Ok(())
}

/// A client's load, as [`check_load`] takes it.
#[derive(Copy, Clone, Debug)]
pub struct Load {
    /// Streams per service, Get and GetProfile together.
    pub streams_per_service: u64,
    /// Services, when known before the run (not for a label selector).
    pub services: Option<u64>,
    /// HTTP/2 connections.
    pub connections: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(streams_per_service: u64, services: Option<u64>, connections: u32) -> Load {
        Load {
            streams_per_service,
            services,
            connections,
        }
    }

    #[test]
    fn loads_at_the_bounds_pass_and_past_them_name_the_flag() {
        let check =
            |l| check_load(l, "--streams-per-service", "--connections").map_err(|e| e.to_string());
        assert_eq!(check(load(MAX_STREAMS, Some(1), MAX_CONNECTIONS)), Ok(()));
        assert_eq!(check(load(1000, Some(1000), 1000)), Ok(()));
        assert_eq!(
            check(load(100_000_000, None, 1)).unwrap_err(),
            "--streams-per-service 100000000 is more than one client holds: at most 1000000 streams (about 8 KB each); spread a larger load over several clients"
        );
        assert!(check(load(1000, Some(1001), 1)).unwrap_err().starts_with(
            "1001 services x 1000 streams is 1001000 streams, more than one client holds"
        ));
        assert_eq!(
            check(load(1, None, 1_000_000)).unwrap_err(),
            "--connections 1000000 is more than one client can open: at most 65535 (one local TCP port each)"
        );
        assert_eq!(
            check(load(2, Some(3), 7)).unwrap_err(),
            "--connections 7 is more than the 6 streams it would carry: give at most 6"
        );
        // Unknown services (a label selector): connections are not compared.
        assert_eq!(check(load(1, None, 100)), Ok(()));
        // No overflow on the product.
        assert!(check(load(MAX_STREAMS, Some(u64::MAX), 1)).is_err());
    }
}
