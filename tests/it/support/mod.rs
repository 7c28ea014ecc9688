pub mod alone;
pub mod report;
pub mod sandbox;
pub mod sshd;
