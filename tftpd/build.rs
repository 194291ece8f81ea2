//! For tftpd's own tests only (nothing here changes the binaries): what this
//! machine has that some of them need. `cfg(has_nginx)`, `has_moto_server`,
//! `has_fake_gcs_server`, `has_azurite_blob`, `has_curl`, `has_prlimit`,
//! `has_ip`, `has_nft`, `has_qemu`, `has_atftpd`, `has_dnsmasq` and
//! `has_tftpd_hpa` (`in.tftpd-hpa`) when the program is on PATH;
//! `cfg(root)` when building as root (the privilege-drop tests). A test whose need is missing is compiled
//! `#[ignore = "needs ..."]`, so `cargo test` lists it as ignored with its
//! reason instead of passing it empty. Under `TFTP_INTEROP_REQUIRED=1` (CI)
//! every program cfg is set: a missing program then fails its test.
//!
//! Cargo runs this again when PATH or TFTP_INTEROP_REQUIRED changes, or a
//! program found here changes; after installing one, `touch tftpd/build.rs`.

use std::path::PathBuf;

/// (program, cfg)
const PROGRAMS: &[(&str, &str)] = &[
    ("nginx", "has_nginx"),
    ("moto_server", "has_moto_server"),
    ("fake-gcs-server", "has_fake_gcs_server"),
    ("azurite-blob", "has_azurite_blob"),
    ("curl", "has_curl"),
    ("prlimit", "has_prlimit"),
    ("ip", "has_ip"),
    ("nft", "has_nft"),
    ("qemu-system-x86_64", "has_qemu"),
    ("atftpd", "has_atftpd"),
    ("dnsmasq", "has_dnsmasq"),
    ("in.tftpd-hpa", "has_tftpd_hpa"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=TFTP_INTEROP_REQUIRED");
    let required = std::env::var("TFTP_INTEROP_REQUIRED").as_deref() == Ok("1");
    for (program, cfg) in PROGRAMS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        match on_path(program) {
            Some(path) => {
                println!("cargo::rerun-if-changed={}", path.display());
                println!("cargo::rustc-cfg={cfg}");
            }
            None if required => println!("cargo::rustc-cfg={cfg}"),
            None => {}
        }
    }
    println!("cargo::rustc-check-cfg=cfg(root)");
    if effective_uid() == Some(0) {
        println!("cargo::rustc-cfg=root");
    }
}

/// Where `program` is on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// This process's effective uid, from /proc.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}
