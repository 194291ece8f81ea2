//! Fuzz target `packet_parse`: the invariants of `tftp_proto::fuzzing::run_packet_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tftp_proto::fuzzing::run_packet_parse(data);
});
