//! Fuzz target `session`: the invariants of `tftp_proto::fuzzing::session::run_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tftp_proto::fuzzing::session::run_session(data);
});
