//! Fuzz target `netascii_roundtrip`: the invariants of `tftp_proto_check::run_netascii_roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tftp_proto_check::run_netascii_roundtrip(data);
});
