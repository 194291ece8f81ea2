//! The [`Client`]: its settings, and `get`/`put` on any [`Runtime`] (the
//! blocking ones are in [`blocking`](crate::blocking)). Every call waits out
//! the receiver's dally, so a server whose final DATA was not acknowledged
//! hears the ACK again and does not time out.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;

use futures_io::{AsyncRead, AsyncWrite};
use tftp_proto::client::{ClientGet, ClientPut};
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::Mode;
use tftp_proto::stats::Stats;
use tftp_proto::time::Instant;

use crate::driver::future::{run, Io, Link, ASYNC};
use crate::driver::{Clock, Data, SessionDriver};
use crate::error::ClientError;
use crate::runtime::{Runtime, Wrap};

pub use tftp_proto::options::{DEFAULT_CLIENT_DALLY, DEFAULT_CLIENT_MAX_RTO};

/// A TFTP client for one server, on runtime `R`: what it asks for
/// (mode, options) and how it retransmits.
#[derive(Clone, Debug)]
pub struct Client<R> {
    runtime: R,
    server: SocketAddr,
    mode: Mode,
    options: TransferOptions,
    ask_tsize: bool,
    limits: Limits,
}

impl<R: Default> Client<R> {
    /// A client for `server` (its listening address): octet mode, no
    /// options, the default policy with a [`DEFAULT_CLIENT_DALLY`] dally and
    /// a [`DEFAULT_CLIENT_MAX_RTO`] timer ceiling.
    pub fn new(server: SocketAddr) -> Self {
        Client {
            runtime: R::default(),
            server,
            mode: Mode::Octet,
            options: TransferOptions::default(),
            ask_tsize: false,
            limits: Limits::client(),
        }
    }
}

impl<R> Client<R> {
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

    /// Asks for this retransmission timeout in seconds (RFC 2349). The timer
    /// ceiling is raised to `3 × seconds` (at most 10 s) if lower
    /// ([`Limits::fit_timeout`]). Once negotiated, the dally after a
    /// download's final ACK is at least `2 × seconds`, so it outlasts a
    /// server retransmitting every `seconds`.
    pub fn timeout(mut self, seconds: u8) -> Self {
        self.options.timeout = Some(seconds);
        self.limits.fit_timeout(seconds);
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

    /// The full local policy (timer bounds, dally, ...). It replaces the
    /// client's defaults, [`DEFAULT_CLIENT_DALLY`] and
    /// [`DEFAULT_CLIENT_MAX_RTO`] included:
    /// `Limits::default()` has a server's 3 s dally. The receiver lingers
    /// `max(dally, 3 × RTO)` (capped by `max_rto`), and at least twice a
    /// negotiated `timeout`: with a `timeout` of N s a download returns 2N
    /// to 3N s after its last block.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A download session for `remote`.
    pub(crate) fn get_session(&self, remote: &[u8], now: Instant) -> io::Result<ClientGet> {
        let mut options = self.options;
        options.tsize = self.ask_tsize.then_some(0);
        ClientGet::get(self.server, remote, self.mode, options, &self.limits, now).map_err(invalid)
    }

    /// An upload session for `remote`; `size` is announced with `tsize` when
    /// asked for and known (octet mode only: netascii changes the size).
    pub(crate) fn put_session(
        &self,
        remote: &[u8],
        size: Option<u64>,
        now: Instant,
    ) -> io::Result<ClientPut> {
        let mut options = self.options;
        options.tsize = self.ask_tsize.then(|| self.mode.wire_size(size)).flatten();
        ClientPut::put(self.server, remote, self.mode, options, &self.limits, now).map_err(invalid)
    }

    /// A local socket of the server's address family.
    pub(crate) fn std_socket(&self) -> io::Result<std::net::UdpSocket> {
        let any: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        crate::net::bind_udp(any, false)
    }
}

impl<R: Runtime> Client<R> {
    /// Downloads `remote` into `sink` (a writer in the runtime's I/O traits,
    /// e.g. `&mut file`); returns after the dally (see [`Client::limits`]),
    /// so the statistics' duration includes it.
    pub async fn get<W>(&self, remote: impl AsRef<[u8]>, sink: W) -> Result<Stats, ClientError>
    where
        R: Wrap<W>,
        <R as Wrap<W>>::Io: AsyncWrite,
    {
        let socket = self.runtime.wrap_udp(self.std_socket()?)?;
        let clock = Clock::new(self.runtime.clone());
        let session = self.get_session(remote.as_ref(), clock.now())?;
        let mut sink = R::wrap(sink);
        let pinned: Pin<&mut <R as Wrap<W>>::Io> = Pin::new(&mut sink);
        let mut io = Io::Download(pinned);
        let mut driver = SessionDriver::new(session, Data::Download, None, ASYNC);
        let outcome = run(&mut driver, &mut Link::Own(&socket), &mut io, &clock, None).await;
        ClientError::check(outcome, driver.stats().clone())
    }

    /// Uploads `source` (a reader in the runtime's I/O traits) as `remote`;
    /// `size` is announced with `tsize` when asked for and known.
    pub async fn put<S>(
        &self,
        remote: impl AsRef<[u8]>,
        source: S,
        size: Option<u64>,
    ) -> Result<Stats, ClientError>
    where
        R: Wrap<S>,
        <R as Wrap<S>>::Io: AsyncRead,
    {
        let socket = self.runtime.wrap_udp(self.std_socket()?)?;
        let clock = Clock::new(self.runtime.clone());
        let session = self.put_session(remote.as_ref(), size, clock.now())?;
        let mut source = R::wrap(source);
        let pinned: Pin<&mut <R as Wrap<S>>::Io> = Pin::new(&mut source);
        let mut io = Io::Source(pinned);
        let mut driver = SessionDriver::new(session, Data::Source(size), None, ASYNC);
        let outcome = run(&mut driver, &mut Link::Own(&socket), &mut io, &clock, None).await;
        ClientError::check(outcome, driver.stats().clone())
    }
}

fn invalid(e: tftp_proto::packet::EncodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}
