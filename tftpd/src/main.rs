//! # tftpd (not built yet)
//!
//! Will be the ready TFTP server binary on `tftp-tokio` (`tftpd --root DIR`,
//! a drop-in for in.tftpd), with a `tftp` client binary beside it. Until then
//! it only says so.

fn main() {
    eprintln!("tftpd is not built yet: see README.md");
    std::process::exit(2);
}
