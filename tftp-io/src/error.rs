//! The client error shared by the adapters' clients.

use std::fmt;
use std::io;

use tftp_proto::packet::ErrorCode;
use tftp_proto::stats::{Outcome, Stats};

/// Why a transfer failed.
#[derive(Debug)]
pub enum ClientError {
    /// A local I/O error (socket, source, sink).
    Io(io::Error),
    /// The server sent an ERROR.
    Server {
        /// Its code.
        code: ErrorCode,
        /// Its message, as sent (lossily UTF-8); `Display` escapes its
        /// control characters.
        message: String,
        /// The statistics of the attempt.
        stats: Box<Stats>,
    },
    /// The server stopped answering (after the configured retries).
    Timeout {
        /// The statistics of the attempt.
        stats: Box<Stats>,
    },
    /// This side ended the transfer with an ERROR (bad OACK, local failure).
    Aborted {
        /// The code sent.
        code: ErrorCode,
        /// The message sent.
        message: String,
        /// The statistics of the attempt.
        stats: Box<Stats>,
    },
}

impl ClientError {
    /// The outcome of a client session as a result.
    pub fn check(outcome: Outcome, stats: Stats) -> Result<Stats, ClientError> {
        let message = stats
            .error
            .as_ref()
            .map(|e| String::from_utf8_lossy(&e.message).into_owned())
            .unwrap_or_default();
        match outcome {
            Outcome::Completed | Outcome::OptionsRefused => Ok(stats),
            Outcome::PeerError(code) => Err(ClientError::Server {
                code,
                message,
                stats: Box::new(stats),
            }),
            // A client session is never refused; a server's refusal reads
            // as an abort with its code.
            Outcome::LocalError(code) | Outcome::Refused { code } => Err(ClientError::Aborted {
                code,
                message,
                stats: Box::new(stats),
            }),
            Outcome::TimedOut => Err(ClientError::Timeout {
                stats: Box::new(stats),
            }),
            Outcome::Evicted => Err(ClientError::Aborted {
                code: ErrorCode::NotDefined,
                message: "cancelled".into(),
                stats: Box::new(stats),
            }),
        }
    }

    /// The ERROR code the server sent, if that is what happened.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "I/O error: {e}"),
            ClientError::Server { code, message, .. } => {
                let message = crate::escape_controls(message);
                write!(f, "server error {}: {message}", code.as_u16())
            }
            ClientError::Timeout { stats } => write!(
                f,
                "timed out: no answer from {} after {} retransmission timeouts",
                stats.peer, stats.timeouts
            ),
            ClientError::Aborted { code, message, .. } => {
                let message = crate::escape_controls(message);
                write!(f, "aborted with error {}: {message}", code.as_u16())
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}
