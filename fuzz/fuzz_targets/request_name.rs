//! Fuzz target `request_name`: the invariants of a request name's lexical
//! clean-up before the kernel resolves it (`tftp_io::root::check_request_name`):
//! no `..` of the request ever reaches the kernel, and a client's directory
//! cannot be left by name.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = tftp_io::root::check_request_name(data);
});
