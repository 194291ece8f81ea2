//! The [`Client`] on a std socket, and [`fetch`] for one-call downloads.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use tftp_proto::client::{ClientGet, ClientPut};
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::Mode;
use tftp_proto::session::Session;
use tftp_proto::stats::{Outcome, Stats};

use crate::driver::{drive, Clock, Io};
use crate::error::ClientError;

/// Downloads `remote` from `server` into `sink` with `blksize` 1468,
/// `windowsize` 16 and `tsize`, falling back to what the server supports.
pub fn fetch(
    server: SocketAddr,
    remote: impl AsRef<[u8]>,
    sink: &mut (dyn Write + Send),
) -> Result<Stats, ClientError> {
    Client::new(server)
        .blksize(1468)
        .windowsize(16)
        .tsize(true)
        .get(remote, sink)
}

/// A TFTP client for one server.
#[derive(Clone, Debug)]
pub struct Client {
    server: SocketAddr,
    mode: Mode,
    options: TransferOptions,
    ask_tsize: bool,
    limits: Limits,
}

impl Client {
    /// A client for `server`: octet mode, no options.
    pub fn new(server: SocketAddr) -> Self {
        Client {
            server,
            mode: Mode::Octet,
            options: TransferOptions::default(),
            ask_tsize: false,
            limits: Limits {
                dally: Duration::from_secs(1),
                ..Limits::default()
            },
        }
    }

    /// Transfer mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Asks for this block size.
    pub fn blksize(mut self, blksize: u16) -> Self {
        self.options.blksize = Some(blksize);
        self
    }

    /// Asks for this window size.
    pub fn windowsize(mut self, windowsize: u16) -> Self {
        self.options.windowsize = Some(windowsize);
        self
    }

    /// Asks for this retransmission timeout in seconds.
    pub fn timeout(mut self, seconds: u8) -> Self {
        self.options.timeout = Some(seconds);
        self
    }

    /// Asks for (get) or announces (put) the transfer size.
    pub fn tsize(mut self, ask: bool) -> Self {
        self.ask_tsize = ask;
        self
    }

    /// Retransmissions before giving up.
    pub fn retries(mut self, retries: u32) -> Self {
        self.limits.retries = retries;
        self
    }

    /// The full local policy.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn socket(&self) -> std::io::Result<UdpSocket> {
        let any: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        UdpSocket::bind(any)
    }

    /// Downloads `remote` into `sink`. Returns once all data is in; the
    /// session lingers on a background thread to re-acknowledge a
    /// retransmitted last block.
    pub fn get(
        &self,
        remote: impl AsRef<[u8]>,
        sink: &mut (dyn Write + Send),
    ) -> Result<Stats, ClientError> {
        let socket = self.socket()?;
        let clock = Clock::new();
        let mut options = self.options;
        options.tsize = self.ask_tsize.then_some(0);
        let mut session = ClientGet::new(
            self.server,
            remote.as_ref(),
            self.mode,
            options,
            &self.limits,
            clock.now(),
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut buf = vec![0u8; 65_536];
        let outcome = drive(
            &mut session,
            &socket,
            &mut Io::Sink(sink),
            clock,
            &mut buf,
            None,
            true,
        )?;
        let stats = session.stats().clone();
        match outcome {
            None => {
                std::thread::spawn(move || {
                    let _ = drive(
                        &mut session,
                        &socket,
                        &mut Io::None,
                        clock,
                        &mut buf,
                        None,
                        false,
                    );
                });
                Ok(stats)
            }
            Some(outcome) => ClientError::check(outcome, stats),
        }
    }

    /// Uploads `source` as `remote`; `size` is announced with `tsize` when
    /// asked for and known.
    pub fn put(
        &self,
        remote: impl AsRef<[u8]>,
        source: &mut (dyn Read + Send),
        size: Option<u64>,
    ) -> Result<Stats, ClientError> {
        let socket = self.socket()?;
        let clock = Clock::new();
        let mut options = self.options;
        options.tsize = if self.ask_tsize && self.mode == Mode::Octet {
            size
        } else {
            None
        };
        let mut session = ClientPut::new(
            self.server,
            remote.as_ref(),
            self.mode,
            options,
            &self.limits,
            clock.now(),
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut buf = vec![0u8; 1024];
        let outcome = drive(
            &mut session,
            &socket,
            &mut Io::Source(source),
            clock,
            &mut buf,
            None,
            false,
        )?;
        ClientError::check(
            outcome.unwrap_or(Outcome::Completed),
            session.stats().clone(),
        )
    }
}
