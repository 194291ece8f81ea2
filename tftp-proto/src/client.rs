//! Client side: [`ClientGet`] (RRQ) and [`ClientPut`] (WRQ).
//!
//! The request goes to the server's listening address; the server's first
//! answer fixes its transfer port (it must come from the same IP address).
//! An OACK is checked with [`validate_oack`](crate::options::validate_oack)
//! and refused with ERROR 8 when the server broke the rules; a server that
//! ignores options (answers DATA 1 or ACK 0) gets RFC 1350 defaults.

use alloc::vec;
use core::net::SocketAddr;

use crate::options::{Direction, Limits, TransferOptions};
use crate::packet::{encode_request, EncodeError, Mode};
use crate::stats::Stats;
use crate::time::Instant;
use crate::transfer::{impl_session, Ctx, Role, State, Transfer};

fn client_transfer(
    role: Role,
    server: SocketAddr,
    filename: &[u8],
    mode: Mode,
    options: TransferOptions,
    limits: &Limits,
    now: Instant,
) -> Result<Transfer, EncodeError> {
    // Never ask for more than this side's own limits allow.
    let options = options.clamped_to(limits);
    let write = role == Role::ClientPut;
    // "opcode filename NUL mode NUL": 4 bytes besides the two strings.
    let head = filename
        .len()
        .saturating_add(mode.as_str().len())
        .saturating_add(4);
    let len = head.saturating_add(options.encoded_len());
    let mut tx = vec![0u8; len.max(512)];
    let n = encode_request(&mut tx, write, filename, mode, &options)?;
    let direction = if write {
        Direction::Write
    } else {
        Direction::Read
    };
    // The option pairs follow "opcode filename NUL mode NUL".
    let pairs = tx.get(head..n).unwrap_or_default();
    let stats = Stats::new(server, filename, mode, direction, pairs, now);
    let mut ctx = Ctx::new(role, server, limits, mode == Mode::Netascii, stats);
    ctx.tx = tx;
    ctx.asked = options;
    ctx.queue_tx(n);
    Ok(Transfer {
        ctx,
        state: State::Requesting,
    })
}

/// Downloads a file (RRQ).
pub struct ClientGet(Transfer);

impl ClientGet {
    /// Starts a download of `filename` from `server` (its listening address),
    /// asking for `options` (use `tsize: Some(0)` to learn the size). Fails
    /// only if the file name is empty or contains a NUL byte.
    pub fn new(
        server: SocketAddr,
        filename: &[u8],
        mode: Mode,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Result<Self, EncodeError> {
        client_transfer(
            Role::ClientGet,
            server,
            filename,
            mode,
            options,
            limits,
            now,
        )
        .map(ClientGet)
    }

    /// The size announced by the server's `tsize`, once known.
    pub fn transfer_size(&self) -> Option<u64> {
        self.0.ctx.stats.transfer_size
    }
}

impl_session!(ClientGet);

/// Uploads a file (WRQ).
pub struct ClientPut(Transfer);

impl ClientPut {
    /// Starts an upload of `filename` to `server`, asking for `options` (set
    /// `tsize` to the size when known). Fails only if the file name is empty
    /// or contains a NUL byte.
    pub fn new(
        server: SocketAddr,
        filename: &[u8],
        mode: Mode,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Result<Self, EncodeError> {
        client_transfer(
            Role::ClientPut,
            server,
            filename,
            mode,
            options,
            limits,
            now,
        )
        .map(ClientPut)
    }
}

impl_session!(ClientPut);
