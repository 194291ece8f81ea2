//! Fuzz target `options_negotiate`: the invariants of `tftp_proto::fuzzing::run_options_negotiate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tftp_proto::fuzzing::run_options_negotiate(data);
});
