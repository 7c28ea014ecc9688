//! Shared helpers for integration tests.
//!
//! Use from a test crate with `mod support;` and then e.g.
//! `use support::sshd::Sshd;`.

pub mod sshd;
