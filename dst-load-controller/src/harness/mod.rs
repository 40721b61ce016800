//! The harness of `run`: what a scenario needs beyond the client engine.
//! [`mock_feed`] follows the embedded mock's changes as the client's ground
//! truth, so that the client builds without the mock.

pub mod mock_feed;
