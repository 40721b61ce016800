//! The harness of `run`: one scenario ([`Plan`]) against one [`Target`] (the
//! embedded mock, a cluster, or two linked clusters), from choosing the seed
//! to the [`Outcome`]. What every target shares (the client and its
//! configuration, readiness, progress, the settle, the summary) is written
//! once, in [`plan`]; what differs (who serves and who changes the
//! destinations) is a [`load::Load`]: [`mock`] and [`cluster`].
//! [`red_line`] runs plans at growing loads; [`mock_feed`] follows the
//! mock's changes as the client's ground truth, so that the client builds
//! without the mock.

pub mod cluster;
mod error;
mod load;
pub mod mock;
pub mod mock_feed;
pub mod plan;
pub mod progress;
pub mod red_line;

pub use error::Error;
pub use plan::{Admin, Outcome, Plan, Target, run};
