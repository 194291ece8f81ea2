//! Fuzz target `netascii_roundtrip`: the invariants of `tftp_proto::fuzzing::run_netascii_roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tftp_proto::fuzzing::run_netascii_roundtrip(data);
});
