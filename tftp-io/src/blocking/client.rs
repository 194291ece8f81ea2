//! The client's `get` and `put` on a blocking socket.

use std::io::{Read, Write};
use std::net::SocketAddr;

use tftp_proto::stats::Stats;

use super::{executor, Threads};
use crate::driver::threads::{run, Io, Link};
use crate::driver::{Clock, Data, SessionDriver};
use crate::error::ClientError;
use crate::Client;

impl Client<Threads> {
    /// Downloads `remote` into `sink`; returns after the dally.
    pub fn get(
        &self,
        remote: impl AsRef<[u8]>,
        sink: &mut (dyn Write + Send),
    ) -> Result<Stats, ClientError> {
        let socket = self.std_socket()?;
        let clock = Clock::new(Threads::default());
        let session = self.get_session(remote.as_ref(), clock.now())?;
        let mut driver = SessionDriver::new(session, Data::Download, None, executor(false));
        let mut link = Link::own(&socket)?;
        let outcome = run(
            &mut driver,
            &mut link,
            &mut Io::Download(sink),
            &clock,
            None,
        )?;
        ClientError::check(outcome, driver.stats().clone())
    }

    /// Uploads `source` as `remote`; `size` is announced with `tsize` when
    /// asked for and known.
    pub fn put(
        &self,
        remote: impl AsRef<[u8]>,
        source: &mut (dyn Read + Send),
        size: Option<u64>,
    ) -> Result<Stats, ClientError> {
        let socket = self.std_socket()?;
        let clock = Clock::new(Threads::default());
        let session = self.put_session(remote.as_ref(), size, clock.now())?;
        let sized = size.is_some();
        let mut driver = SessionDriver::new(session, Data::Source(size), None, executor(sized));
        let mut link = Link::own(&socket)?;
        let outcome = run(
            &mut driver,
            &mut link,
            &mut Io::Source(source),
            &clock,
            None,
        )?;
        ClientError::check(outcome, driver.stats().clone())
    }
}

/// Downloads `remote` from `server` into `sink` with `blksize` 1468,
/// `windowsize` 16 and `tsize`, falling back to what the server supports.
pub fn fetch(
    server: SocketAddr,
    remote: impl AsRef<[u8]>,
    sink: &mut (dyn Write + Send),
) -> Result<Stats, ClientError> {
    Client::<Threads>::new(server)
        .blksize(1468)
        .windowsize(16)
        .tsize(true)
        .get(remote, sink)
}
