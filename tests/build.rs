//! Which of the interop tests' third-party TFTP clients this machine has:
//! `cfg(has_curl)`, `has_tftp` (tftp-hpa), `has_atftp`, `has_busybox`, each
//! set when the program is on PATH. A test whose client is missing is
//! compiled `#[ignore = "needs ..."]`, so `cargo test` lists it as ignored
//! with its reason instead of passing it empty. Under
//! `TFTP_INTEROP_REQUIRED=1` (CI) every cfg is set: a missing client then
//! fails its test.
//!
//! Cargo runs this again when PATH or TFTP_INTEROP_REQUIRED changes, or a
//! program found here changes; after installing a client, `touch
//! tests/build.rs`.

use std::path::PathBuf;

/// (program, cfg)
const CLIENTS: &[(&str, &str)] = &[
    ("curl", "has_curl"),
    ("tftp", "has_tftp"),
    ("atftp", "has_atftp"),
    ("busybox", "has_busybox"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=TFTP_INTEROP_REQUIRED");
    let required = std::env::var("TFTP_INTEROP_REQUIRED").as_deref() == Ok("1");
    for (program, cfg) in CLIENTS {
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
}

/// Where `program` is on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
