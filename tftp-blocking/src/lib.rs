//! # tftp-blocking (not built yet)
//!
//! Will be the same framework as `tftp-tokio` on `std::net::UdpSocket` and
//! threads, for tools and embedded Linux that want no async runtime, as a thin
//! driver of `tftp-proto`. Nothing is exported yet.
#![forbid(unsafe_code)]
