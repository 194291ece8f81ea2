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
use crate::session::{impl_session, Ctx, Role, State, Transfer};
use crate::stats::Stats;
use crate::time::Instant;

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
    let len = 4 + filename.len() + mode.as_str().len() + options.encoded_len();
    let mut tx = vec![0u8; len.max(512)];
    let n = encode_request(&mut tx, write, filename, mode, &options)?;
    let direction = if write {
        Direction::Write
    } else {
        Direction::Read
    };
    // The option pairs follow "opcode filename NUL mode NUL".
    let pairs = tx
        .get(4 + filename.len() + mode.as_str().len()..n)
        .unwrap_or_default();
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

/// What a client asks for and how it retransmits, for one server: the
/// settings the adapters' `Client`s share (they forward their builder
/// methods here with [`client_setters!`](crate::client_setters)).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    server: SocketAddr,
    mode: Mode,
    options: TransferOptions,
    ask_tsize: bool,
    limits: Limits,
}

impl ClientConfig {
    /// Octet mode, no options, the default policy with a 1 s dally.
    pub fn new(server: SocketAddr) -> Self {
        ClientConfig {
            server,
            mode: Mode::Octet,
            options: TransferOptions::default(),
            ask_tsize: false,
            limits: Limits {
                dally: core::time::Duration::from_secs(1),
                ..Limits::default()
            },
        }
    }

    /// The server's listening address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Transfer mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Asks for this block size (RFC 2348).
    pub fn blksize(mut self, blksize: u16) -> Self {
        self.options.blksize = Some(blksize);
        self
    }

    /// Asks for this window size (RFC 7440).
    pub fn windowsize(mut self, windowsize: u16) -> Self {
        self.options.windowsize = Some(windowsize);
        self
    }

    /// Asks for this retransmission timeout in seconds (RFC 2349).
    pub fn timeout(mut self, seconds: u8) -> Self {
        self.options.timeout = Some(seconds);
        self
    }

    /// Asks for (get) or announces (put) the transfer size (RFC 2349).
    pub fn tsize(mut self, ask: bool) -> Self {
        self.ask_tsize = ask;
        self
    }

    /// Retransmissions before giving up.
    pub fn retries(mut self, retries: u32) -> Self {
        self.limits.retries = retries;
        self
    }

    /// The full local policy (timer bounds, dally, ...).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A download session for `remote`.
    pub fn get_session(&self, remote: &[u8], now: Instant) -> Result<ClientGet, EncodeError> {
        let mut options = self.options;
        options.tsize = self.ask_tsize.then_some(0);
        ClientGet::new(self.server, remote, self.mode, options, &self.limits, now)
    }

    /// An upload session for `remote`; `size` is announced with `tsize` when
    /// asked for and known (octet mode only: netascii changes the size).
    pub fn put_session(
        &self,
        remote: &[u8],
        size: Option<u64>,
        now: Instant,
    ) -> Result<ClientPut, EncodeError> {
        let mut options = self.options;
        options.tsize = if self.ask_tsize && self.mode == Mode::Octet {
            size
        } else {
            None
        };
        ClientPut::new(self.server, remote, self.mode, options, &self.limits, now)
    }
}

/// Generates an adapter `Client`'s builder methods, forwarding to the
/// [`ClientConfig`] in its field `config` (one definition for every runtime).
#[macro_export]
macro_rules! client_setters {
    () => {
        /// Transfer mode.
        pub fn mode(mut self, mode: $crate::packet::Mode) -> Self {
            self.config = self.config.mode(mode);
            self
        }

        /// Asks for this block size (RFC 2348).
        pub fn blksize(mut self, blksize: u16) -> Self {
            self.config = self.config.blksize(blksize);
            self
        }

        /// Asks for this window size (RFC 7440).
        pub fn windowsize(mut self, windowsize: u16) -> Self {
            self.config = self.config.windowsize(windowsize);
            self
        }

        /// Asks for this retransmission timeout in seconds (RFC 2349).
        pub fn timeout(mut self, seconds: u8) -> Self {
            self.config = self.config.timeout(seconds);
            self
        }

        /// Asks for (get) or announces (put) the transfer size (RFC 2349).
        pub fn tsize(mut self, ask: bool) -> Self {
            self.config = self.config.tsize(ask);
            self
        }

        /// Retransmissions before giving up.
        pub fn retries(mut self, retries: u32) -> Self {
            self.config = self.config.retries(retries);
            self
        }

        /// The full local policy (timer bounds, dally, ...).
        pub fn limits(mut self, limits: $crate::options::Limits) -> Self {
            self.config = self.config.limits(limits);
            self
        }
    };
}
