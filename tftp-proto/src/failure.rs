//! Local failures and the one table of the ERROR code and text each one
//! sends: an adapter names what went wrong ([`Failure`]), the core decides
//! what the peer hears ([`Failure::code`], [`Failure::message`]).

use core::fmt;

use crate::packet::ErrorCode;

/// Something that went wrong on this side, named; see
/// [`Session::fail`](crate::session::Session::fail) and
/// [`TftpError::from`](crate::server::TftpError).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The response source failed.
    ReadError,
    /// The sink failed (other than a full disk or a size limit).
    WriteError,
    /// The sink's storage is full.
    DiskFull,
    /// The upload is larger than the server accepts.
    TooLarge,
    /// A new-only upload found its name taken.
    FileExists,
    /// The server is shutting down and aborts its sessions.
    ShuttingDown,
    /// No resources for the request now (no transfer socket, no descriptor,
    /// no memory, no session place): the client may ask again. Handlers
    /// answer it to have the request retried within the descriptor wait.
    Busy,
    /// The handler did not answer within the session's unverified lifetime.
    HandlerTimedOut,
    /// The transfer fell below [`Limits::min_rate`](crate::options::Limits::min_rate).
    TooSlow,
    /// The peer sent DATA larger than the negotiated block size.
    OversizedData,
    /// The transfer exceeded [`Limits::max_transfer_blocks`](crate::options::Limits::max_transfer_blocks).
    TooManyBlocks,
    /// The transfer needs a block past 65535 and
    /// [`Rollover::Refuse`](crate::options::Rollover::Refuse) forbids the
    /// block number to roll over.
    OutOfBlockNumbers,
    /// The file does not exist.
    NotFound,
    /// The request is not allowed (a name outside the root, a denied path).
    AccessViolation,
    /// The name is not a regular file.
    NotRegularFile,
    /// Writes are not allowed on this server.
    ReadOnly,
    /// An upload's name is outside the upload directory.
    UploadsElsewhere,
    /// A file name rewriting rule failed.
    RemapFailure,
}

impl Failure {
    /// The ERROR code the peer gets.
    pub const fn code(self) -> ErrorCode {
        self.entry().0
    }

    /// The ERROR text the peer gets.
    pub const fn message(self) -> &'static str {
        self.entry().1
    }

    /// The table.
    const fn entry(self) -> (ErrorCode, &'static str) {
        use ErrorCode::*;
        match self {
            Failure::ReadError => (NotDefined, "Read error"),
            Failure::WriteError => (NotDefined, "Write error"),
            Failure::DiskFull => (ErrorCode::DiskFull, "Disk full"),
            Failure::TooLarge => (ErrorCode::DiskFull, "File too large"),
            Failure::FileExists => (ErrorCode::FileExists, "File already exists"),
            Failure::ShuttingDown => (NotDefined, "Server shutting down"),
            Failure::Busy => (NotDefined, "Server busy, try again later"),
            Failure::HandlerTimedOut => (NotDefined, "Request timed out"),
            Failure::TooSlow => (NotDefined, "Transfer too slow"),
            Failure::OversizedData => (IllegalOperation, "DATA larger than the block size"),
            Failure::TooManyBlocks => (ErrorCode::DiskFull, "Transfer too large"),
            Failure::OutOfBlockNumbers => {
                (ErrorCode::DiskFull, "File too large for the block numbers")
            }
            Failure::NotFound => (FileNotFound, "File not found"),
            Failure::AccessViolation => (ErrorCode::AccessViolation, "Access violation"),
            Failure::NotRegularFile => (ErrorCode::AccessViolation, "Not a regular file"),
            Failure::ReadOnly => (ErrorCode::AccessViolation, "Writes are not allowed"),
            Failure::UploadsElsewhere => (ErrorCode::AccessViolation, "Uploads go elsewhere"),
            Failure::RemapFailure => (ErrorCode::AccessViolation, "Remap table failure"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_the_wire_texts() {
        assert_eq!(Failure::Busy.code(), ErrorCode::NotDefined);
        assert_eq!(Failure::Busy.message(), "Server busy, try again later");
        assert_eq!(Failure::DiskFull.code(), ErrorCode::DiskFull);
        assert_eq!(Failure::TooLarge.message(), "File too large");
        assert_eq!(Failure::FileExists.code(), ErrorCode::FileExists);
        assert_eq!(alloc::format!("{}", Failure::TooSlow), "Transfer too slow");
        // Texts fit an ERROR packet in a 512-byte buffer.
        for f in [
            Failure::ReadError,
            Failure::OversizedData,
            Failure::RemapFailure,
        ] {
            assert!(f.message().len() < 64);
        }
    }
}
