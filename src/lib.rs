//! selfdeploy: a persisted finite-state machine that deploys a service which
//! cannot restart itself, with a human approval in the loop.

pub mod atomic;
pub mod config;
pub mod contract;
pub mod demo;
pub mod doctor;
pub mod effect;
pub mod engine;
pub mod exec;
mod load_settings;
pub mod machine;
pub mod probe;
pub mod replay;
pub mod secrets;
pub mod store;
pub mod table;
pub mod text_table;
pub mod transport;
pub mod watch;
