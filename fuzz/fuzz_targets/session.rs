//! Fuzz target `session`: the invariants of `tftp_proto_check::session::run_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tftp_proto_check::session::run_session(data);
});
