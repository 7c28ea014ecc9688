//! The bytes selfdeploy owes to programs it does not control, and the rules
//! that produce them: the remote command the host runs, the deploy log and
//! its merge stamp, reading a result and its verdict, the records in the
//! state directory, Python's text semantics where the original's bytes are a
//! contract, and the names that become path components.
//!
//! Pure: no I/O, no clock, no environment. The machine builds on this layer
//! alone (a test keeps it so: `tests/it/purity.rs`).

pub mod deploy_log;
pub mod hook_result;
pub mod markers;
pub mod names;
pub mod pytext;
pub mod remote;
