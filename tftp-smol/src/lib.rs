//! # tftp-smol (not built yet)
//!
//! Will be the same framework as `tftp-tokio` on smol / async-io (and so also
//! under async-std), as a thin driver of `tftp-proto`. Nothing is exported yet.
#![forbid(unsafe_code)]
