//! Fuzz target `options_negotiate`: the invariants of `tftp_proto_check::run_options_negotiate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tftp_proto_check::run_options_negotiate(data);
});
