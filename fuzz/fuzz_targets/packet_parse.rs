//! Fuzz target `packet_parse`: the invariants of `tftp_proto_check::run_packet_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tftp_proto_check::run_packet_parse(data);
});
