//! Integration tests of tftp-rs live in `tests/tests/`, one behaviour per file.
