//! The [`Client`] on a std socket, and [`fetch`] for one-call downloads.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use tftp_proto::client::ClientConfig;
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

/// A TFTP client for one server (settings: [`ClientConfig`]).
#[derive(Clone, Debug)]
pub struct Client {
    config: ClientConfig,
}

impl Client {
    /// A client for `server`: octet mode, no options.
    pub fn new(server: SocketAddr) -> Self {
        Client {
            config: ClientConfig::new(server),
        }
    }

    tftp_proto::client_setters!();

    fn socket(&self) -> io::Result<UdpSocket> {
        let any: SocketAddr = match self.config.server() {
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
        let mut session = self
            .config
            .get_session(remote.as_ref(), clock.now())
            .map_err(invalid)?;
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
        let mut session = self
            .config
            .put_session(remote.as_ref(), size, clock.now())
            .map_err(invalid)?;
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

fn invalid(e: tftp_proto::packet::EncodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}
