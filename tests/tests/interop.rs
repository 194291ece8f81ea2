//! Real third-party clients against every runtime's server: curl, tftp-hpa's
//! `tftp`, `atftp` and `busybox tftp`, each fetching files of several sizes
//! with the options it supports (curl also past the 16-bit block counter),
//! uploading with them, and, where the client has it, in netascii both ways.
//! A client missing at build time makes its tests ignored, with the reason
//! (tests/build.rs); under `TFTP_INTEROP_REQUIRED=1` they run, and fail.

mod common;

use std::path::Path;
use std::process::Command;

use common::adapters::{Adapter, Cfg, Served};

const SIZES: &[usize] = &[1, 0, 511, 512, 513, 65_536, 300_001];

/// Text with every kind of line end: LF, CR LF, a bare CR, and none last.
const TEXT: &[u8] = b"one\ntwo\r\nthree\rfour\n\nlast";
/// [`TEXT`] on the wire in netascii: LF as CR LF, CR as CR NUL.
const TEXT_WIRE: &[u8] = b"one\r\ntwo\r\0\r\nthree\r\0four\r\n\r\nlast";

/// Panics unless `program` is on PATH (when the build found it, or
/// `TFTP_INTEROP_REQUIRED=1` said it must be there).
fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not on PATH (required by TFTP_INTEROP_REQUIRED=1, or removed since the build)"
    );
}

/// Runs a client command (each has its own retry limit); returns its success.
fn run(cmd: &mut Command) -> bool {
    cmd.stdin(std::process::Stdio::null());
    let output = cmd.output().expect("spawn");
    if !output.status.success() {
        println!(
            "{cmd:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.status.success()
}

struct Fixture {
    dir: tempfile::TempDir,
    out: tempfile::TempDir,
    server: Served,
}

fn fixture<A: Adapter>() -> Fixture {
    let files: Vec<(String, Vec<u8>)> = SIZES
        .iter()
        .map(|&n| (format!("f{n}.bin"), common::content(n, n as u64)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let mut refs = refs;
    refs.push(("text.txt", TEXT));
    let dir = common::root(&refs);
    let cfg = Cfg {
        allow_write: true,
        ..Cfg::default()
    };
    let server = A::serve_dir(dir.path(), &cfg);
    Fixture {
        dir,
        out: tempfile::tempdir().unwrap(),
        server,
    }
}

/// A local file to upload: `bytes` in the fixture's output directory.
fn upload_source(f: &Fixture, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = f.out.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Checks that the server stored `want` as `name`.
fn check_stored(f: &Fixture, name: &str, want: &[u8], what: &str) {
    let got = std::fs::read(f.dir.path().join(name))
        .unwrap_or_else(|e| panic!("{what}: {name} not stored: {e}"));
    assert!(
        got == want,
        "{what}: {name}: {} bytes stored, want {}",
        got.len(),
        want.len()
    );
}

fn check(f: &Fixture, name: &str, local: &Path, what: &str) {
    let want = std::fs::read(f.dir.path().join(name)).unwrap();
    let got = std::fs::read(local).unwrap_or_else(|e| panic!("{what}: {name} not written: {e}"));
    assert!(
        got == want,
        "{what}: {name}: {} bytes, want {}",
        got.len(),
        want.len()
    );
}

fn curl<A: Adapter>() {
    require("curl");
    let f = fixture::<A>();
    let port = f.server.addr.port();
    for &size in SIZES {
        let name = format!("f{size}.bin");
        for (label, extra) in [
            ("default", vec![]),
            ("blksize 1468", vec!["--tftp-blksize", "1468"]),
            ("no options", vec!["--tftp-no-options"]),
        ] {
            let local = f
                .out
                .path()
                .join(format!("curl-{size}-{}", label.replace(' ', "_")));
            let ok = run(Command::new("curl")
                .args(["-sS", "-o"])
                .arg(&local)
                .args(&extra)
                .arg(format!("tftp://127.0.0.1:{port}/{name}")));
            assert!(ok, "curl {label} {name}");
            check(&f, &name, &local, &format!("curl {label}"));
        }
    }
    // Past the 16-bit block counter: 65 536 blocks of 512 bytes is 32 MiB.
    let big = common::content(32 * 1024 * 1024 + 1000, 77);
    std::fs::write(f.dir.path().join("big.bin"), &big).unwrap();
    let local = f.out.path().join("curl-big");
    assert!(run(Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&local)
        .arg(format!("tftp://127.0.0.1:{port}/big.bin"))));
    check(&f, "big.bin", &local, "curl rollover");
    // curl keeps netascii as it came: the wire form, byte for byte.
    let local = f.out.path().join("curl-text");
    assert!(run(Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&local)
        .arg(format!("tftp://127.0.0.1:{port}/text.txt;mode=netascii"))));
    assert_eq!(std::fs::read(&local).unwrap(), TEXT_WIRE, "curl netascii");
    let data = common::content(300_001, 5);
    let src = upload_source(&f, "curl-up", &data);
    for (label, extra) in [
        ("default", vec![]),
        ("blksize 1468", vec!["--tftp-blksize", "1468"]),
    ] {
        let name = format!("curl-{}.bin", label.replace(' ', "_"));
        assert!(run(Command::new("curl")
            .args(["-sS", "-T"])
            .arg(&src)
            .args(&extra)
            .arg(format!("tftp://127.0.0.1:{port}/{name}"))));
        check_stored(&f, &name, &data, &format!("curl upload {label}"));
    }
    f.server.stop();
}

fn tftp_hpa<A: Adapter>() {
    require("tftp");
    let f = fixture::<A>();
    let port = f.server.addr.port().to_string();
    for &size in SIZES {
        let name = format!("f{size}.bin");
        let local = f.out.path().join(format!("hpa-{size}"));
        let ok = run(Command::new("tftp")
            .args(["127.0.0.1", &port, "-m", "binary", "-c", "get", &name])
            .arg(&local));
        assert!(ok, "tftp-hpa {name}");
        check(&f, &name, &local, "tftp-hpa");
    }
    // Netascii both ways: tftp-hpa converts to and from local line ends,
    // so the text comes back as it was.
    let local = f.out.path().join("hpa-text");
    assert!(run(Command::new("tftp")
        .args(["127.0.0.1", &port, "-m", "ascii", "-c", "get", "text.txt"])
        .arg(&local)));
    check(&f, "text.txt", &local, "tftp-hpa netascii");
    let src = upload_source(&f, "hpa-text-up", TEXT);
    assert!(run(Command::new("tftp")
        .args(["127.0.0.1", &port, "-m", "ascii", "-c", "put"])
        .arg(&src)
        .arg("hpa-text.txt")));
    check_stored(&f, "hpa-text.txt", TEXT, "tftp-hpa netascii upload");
    let data = common::content(300_001, 6);
    let src = upload_source(&f, "hpa-up", &data);
    assert!(run(Command::new("tftp")
        .args(["127.0.0.1", &port, "-m", "binary", "-c", "put"])
        .arg(&src)
        .arg("hpa.bin")));
    check_stored(&f, "hpa.bin", &data, "tftp-hpa upload");
    f.server.stop();
}

/// atftp's runs: without options, with blksize and tsize, with a window.
const ATFTP_OPTIONS: &[(&str, &[&str])] = &[
    ("plain", &[]),
    (
        "blksize+tsize",
        &["--option", "blksize 1468", "--option", "tsize 0"],
    ),
    (
        "windowsize",
        &["--option", "blksize 1024", "--option", "windowsize 8"],
    ),
];

fn atftp<A: Adapter>() {
    require("atftp");
    let f = fixture::<A>();
    let port = f.server.addr.port().to_string();
    for &size in SIZES {
        let name = format!("f{size}.bin");
        for &(label, opts) in ATFTP_OPTIONS {
            let local = f
                .out
                .path()
                .join(format!("atftp-{size}-{}", label.replace('+', "_")));
            let ok = run(Command::new("atftp")
                .args(opts)
                .args(["-g", "-r", &name, "-l"])
                .arg(&local)
                .args(["127.0.0.1", &port]));
            assert!(ok, "atftp {label} {name}");
            check(&f, &name, &local, &format!("atftp {label}"));
        }
    }
    let local = f.out.path().join("atftp-text");
    assert!(run(Command::new("atftp")
        .args(["--mode", "netascii", "-g", "-r", "text.txt", "-l"])
        .arg(&local)
        .args(["127.0.0.1", &port])));
    check(&f, "text.txt", &local, "atftp netascii");
    let src = upload_source(&f, "atftp-text-up", TEXT);
    assert!(run(Command::new("atftp")
        .args(["--mode", "netascii", "-p", "-r", "atftp-text.txt", "-l"])
        .arg(&src)
        .args(["127.0.0.1", &port])));
    check_stored(&f, "atftp-text.txt", TEXT, "atftp netascii upload");
    let data = common::content(300_001, 7);
    let src = upload_source(&f, "atftp-up", &data);
    for &(label, opts) in ATFTP_OPTIONS {
        let name = format!("atftp-{}.bin", label.replace('+', "_"));
        assert!(run(Command::new("atftp")
            .args(opts)
            .args(["-p", "-r", &name, "-l"])
            .arg(&src)
            .args(["127.0.0.1", &port])));
        check_stored(&f, &name, &data, &format!("atftp upload {label}"));
    }
    f.server.stop();
}

fn busybox<A: Adapter>() {
    require("busybox");
    let f = fixture::<A>();
    let port = f.server.addr.port().to_string();
    for &size in SIZES {
        let name = format!("f{size}.bin");
        for (label, opts) in [("plain", vec![]), ("blksize 1468", vec!["-b", "1468"])] {
            let local = f
                .out
                .path()
                .join(format!("bb-{size}-{}", label.replace(' ', "_")));
            let ok = run(Command::new("busybox")
                .arg("tftp")
                .args(&opts)
                .args(["-g", "-r", &name, "-l"])
                .arg(&local)
                .args(["127.0.0.1", &port]));
            assert!(ok, "busybox {label} {name}");
            check(&f, &name, &local, &format!("busybox {label}"));
        }
    }
    let data = common::content(300_001, 8);
    let src = upload_source(&f, "bb-up", &data);
    for (label, opts) in [("plain", vec![]), ("blksize 1468", vec!["-b", "1468"])] {
        let name = format!("bb-{}.bin", label.replace(' ', "_"));
        assert!(run(Command::new("busybox")
            .arg("tftp")
            .args(&opts)
            .args(["-p", "-r", &name, "-l"])
            .arg(&src)
            .args(["127.0.0.1", &port])));
        check_stored(&f, &name, &data, &format!("busybox upload {label}"));
    }
    f.server.stop();
}

for_each_adapter!(
    #[cfg_attr(not(has_curl), ignore = "needs curl (apt-get install curl)")]
    curl,
    #[cfg_attr(
        not(has_tftp),
        ignore = "needs tftp-hpa's tftp (apt-get install tftp-hpa)"
    )]
    tftp_hpa,
    #[cfg_attr(not(has_atftp), ignore = "needs atftp (apt-get install atftp)")]
    atftp,
    #[cfg_attr(not(has_busybox), ignore = "needs busybox (apt-get install busybox)")]
    busybox,
);
