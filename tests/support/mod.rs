#![allow(dead_code)]
pub mod sandbox;
pub mod sshd;
