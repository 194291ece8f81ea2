//! Client side: [`Transfer::get`] (RRQ) and [`Transfer::put`] (WRQ).
//!
//! The request goes to the server's listening address; the server's first
//! answer fixes its transfer port (it must come from the same IP address).
//! An OACK is checked with [`validate_oack`](crate::options::validate_oack)
//! and refused with ERROR 8 when the server broke the rules; a server that
//! ignores options (answers DATA 1 or ACK 0) gets RFC 1350 defaults.

use core::net::SocketAddr;

use crate::options::{Limits, TransferOptions};
use crate::packet::{EncodeError, Mode};
use crate::time::Instant;
use crate::transfer::{Role, Transfer};

/// A download session (RRQ), started with [`Transfer::get`].
pub type ClientGet = Transfer;
/// An upload session (WRQ), started with [`Transfer::put`].
pub type ClientPut = Transfer;

impl Transfer {
    /// Starts a download of `filename` from `server` (its listening address),
    /// asking for `options` (use `tsize: Some(0)` to learn the size). Fails
    /// only if the file name is empty or contains a NUL byte.
    pub fn get(
        server: SocketAddr,
        filename: &[u8],
        mode: Mode,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Result<Self, EncodeError> {
        Transfer::client(
            Role::ClientGet,
            server,
            filename,
            mode,
            options,
            limits,
            now,
        )
    }

    /// Starts an upload of `filename` to `server`, asking for `options` (set
    /// `tsize` to the size when known: see [`Mode::wire_size`]). Fails only
    /// if the file name is empty or contains a NUL byte.
    pub fn put(
        server: SocketAddr,
        filename: &[u8],
        mode: Mode,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Result<Self, EncodeError> {
        Transfer::client(
            Role::ClientPut,
            server,
            filename,
            mode,
            options,
            limits,
            now,
        )
    }

    /// The size announced by the peer's `tsize`, once known.
    pub fn transfer_size(&self) -> Option<u64> {
        self.ctx.stats.transfer_size
    }
}
