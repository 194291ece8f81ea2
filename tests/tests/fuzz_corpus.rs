//! Replays every committed fuzz corpus file through the same invariant checks
//! the fuzz targets run, so `cargo test` covers the corpus and past findings.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// Runs every seed of `target`; a seed that no longer decodes into the
/// target's input (its format changed) fails the test, so a regression seed
/// can never silently stop testing anything.
fn replay(target: &str, run: fn(&[u8]) -> bool) {
    for file in corpus(target) {
        let data = std::fs::read(&file).expect("read corpus file");
        let result = std::panic::catch_unwind(|| run(&data));
        match result {
            Ok(true) => {}
            Ok(false) => panic!("{target}: {} no longer decodes", file.display()),
            Err(_) => panic!("{target}: {} breaks an invariant", file.display()),
        }
    }
}

#[test]
fn packet_parse_corpus() {
    replay("packet_parse", tftp_proto_check::run_packet_parse);
}

#[test]
fn options_negotiate_corpus() {
    replay("options_negotiate", tftp_proto_check::run_options_negotiate);
}

#[test]
fn netascii_roundtrip_corpus() {
    replay(
        "netascii_roundtrip",
        tftp_proto_check::run_netascii_roundtrip,
    );
}

#[test]
fn session_corpus() {
    replay("session", tftp_proto_check::session::run_session);
}

#[test]
fn request_name_corpus() {
    replay("request_name", tftp_io::root::check_request_name);
}

/// Seeded random names (of `/`, `.`, `a`, NUL) beyond the corpus.
#[test]
fn request_name_random_inputs() {
    let mut state = 0x1350_2349_7440_u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 24) as usize;
        let name: Vec<u8> = (0..len)
            .map(|i| b"/./.a.b/\0x"[((state >> (i % 60)) % 10) as usize])
            .collect();
        assert!(tftp_io::root::check_request_name(&name));
    }
}

/// Seeded random inputs for the session target beyond the corpus.
#[test]
fn session_random_inputs() {
    let mut state = 0x7440_2347_1350_u64;
    let mut bytes = vec![0u8; 2048];
    for _ in 0..3000 {
        for b in bytes.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let len = (state % 2048) as usize;
        let _ = tftp_proto_check::session::run_session(&bytes[..len]);
    }
}
