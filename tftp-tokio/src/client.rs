//! The [`Client`]: `get` into any [`AsyncWrite`], `put` from any
//! [`AsyncRead`], on the core's client sessions.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tftp_proto::client::{ClientGet, ClientPut};
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::Mode;
use tftp_proto::session::Session;
use tftp_proto::stats::{Outcome, Stats};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UdpSocket;

use crate::driver::{drive, Clock, Io, Until};

pub use tftp_blocking::ClientError;

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
    /// A client for `server` (its listening address): octet mode, no options,
    /// default retransmission policy.
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

    /// The full local policy (retransmission timer bounds, dally, ...).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    async fn socket(&self) -> io::Result<UdpSocket> {
        let any: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        UdpSocket::bind(any).await
    }

    /// Downloads `remote` into `sink`; returns the statistics.
    pub async fn get(
        &self,
        remote: impl AsRef<[u8]>,
        sink: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<Stats, ClientError> {
        let socket = self.socket().await?;
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
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut buf = vec![0u8; 65_536];
        let outcome = drive(
            &mut session,
            &socket,
            &mut Io::Sink(sink, false),
            clock,
            &mut buf,
            None,
            Until::TransferComplete,
        )
        .await;
        let stats = session.stats().clone();
        match outcome {
            // All data is in; dally in the background to re-acknowledge a
            // retransmitted last block.
            None => {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    drive(
                        &mut session,
                        &socket,
                        &mut Io::None,
                        clock,
                        &mut buf,
                        None,
                        Until::Done,
                    )
                    .await;
                });
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
        let socket = self.socket().await?;
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
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut buf = vec![0u8; 1024];
        let outcome = drive(
            &mut session,
            &socket,
            &mut Io::Source(source),
            clock,
            &mut buf,
            None,
            Until::Done,
        )
        .await;
        let stats = session.stats().clone();
        ClientError::check(outcome.unwrap_or(Outcome::Completed), stats)
    }
}
