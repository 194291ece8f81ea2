//! The [`Client`] on async-io: `get` into any `AsyncWrite`, `put` from any
//! `AsyncRead`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use smol::io::{AsyncRead, AsyncWrite};
use smol::Async;
use tftp_blocking::ClientError;
use tftp_proto::client::{ClientGet, ClientPut};
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::Mode;
use tftp_proto::session::Session;
use tftp_proto::stats::{Outcome, Stats};

use crate::driver::{drive, Clock, Io};

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

    fn socket(&self) -> std::io::Result<Async<UdpSocket>> {
        let any: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        Async::<UdpSocket>::bind(any)
    }

    /// Downloads `remote` into `sink`; returns once all data is in (the
    /// session lingers in a detached task for a retransmitted last block).
    pub async fn get(
        &self,
        remote: impl AsRef<[u8]>,
        sink: &mut (dyn AsyncWrite + Send + Unpin),
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
            &mut Io::Sink(sink, false),
            clock,
            &mut buf,
            None,
            true,
        )
        .await;
        let stats = session.stats().clone();
        match outcome {
            None => {
                smol::spawn(async move {
                    drive(
                        &mut session,
                        &socket,
                        &mut Io::None,
                        clock,
                        &mut buf,
                        None,
                        false,
                    )
                    .await;
                })
                .detach();
                Ok(stats)
            }
            Some(outcome) => ClientError::check(outcome, stats),
        }
    }

    /// Uploads `source` as `remote`; `size` is announced with `tsize` when
    /// asked for and known.
    pub async fn put(
        &self,
        remote: impl AsRef<[u8]>,
        source: &mut (dyn AsyncRead + Send + Unpin),
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
        )
        .await;
        ClientError::check(
            outcome.unwrap_or(Outcome::Completed),
            session.stats().clone(),
        )
    }
}
