//! The [`Client`] on async-io: `get` into any `AsyncWrite`, `put` from any
//! `AsyncRead`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use smol::io::{AsyncRead, AsyncWrite};
use smol::Async;
use tftp_blocking::ClientError;
use tftp_proto::client::ClientConfig;
use tftp_proto::session::Session;
use tftp_proto::stats::{Outcome, Stats};

use crate::driver::{drive, Clock, Io};

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

    fn socket(&self) -> io::Result<Async<UdpSocket>> {
        let any: SocketAddr = match self.config.server() {
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
        let mut session = self
            .config
            .get_session(remote.as_ref(), clock.now())
            .map_err(invalid)?;
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
        )
        .await;
        ClientError::check(
            outcome.unwrap_or(Outcome::Completed),
            session.stats().clone(),
        )
    }
}

fn invalid(e: tftp_proto::packet::EncodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}
