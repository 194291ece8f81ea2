//! # tftp-tokio (not built yet)
//!
//! Will be the TFTP server framework (a `Server` with a per-request `Handler`,
//! response sources, per-session and periodic server statistics, a
//! kernel-confined directory handler) and a `Client`, on tokio, as a thin
//! driver of `tftp-proto`. Nothing is exported yet.
#![forbid(unsafe_code)]
