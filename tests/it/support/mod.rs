pub mod alone;
pub mod record;
pub mod report;
pub mod sandbox;
pub mod sshd;
