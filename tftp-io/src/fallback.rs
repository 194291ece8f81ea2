//! [`Fallback`]: two handlers in turn, the second for the names the first
//! does not have. Written once here; each adapter implements its own
//! `Handler` for it with [`Fallback::first`], [`Fallback::then`] and
//! [`Fallback::falls_through`].

use tftp_proto::packet::ErrorCode;
use tftp_proto::server::{Request, TftpError};

use crate::blocking::{self, StdSink, StdSource};
use crate::handler::{Handler, ReadResponse, WriteResponse};

/// Two handlers in turn: a read request goes to `B` when `A` answers
/// ERROR 1 (file not found); writes go to `A` only. `tftpd --root DIR
/// --origin URL` serves DIR first and the origin for what is not there.
///
/// ```no_run
/// use tftp_io::{DirHandler, Fallback};
///
/// # fn main() -> std::io::Result<()> {
/// // Local overrides first, the shared tree for the rest.
/// let handler = Fallback::new(DirHandler::new("/srv/local")?, DirHandler::new("/srv/tftp")?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Fallback<A, B> {
    first: A,
    then: B,
}

impl<A, B> Fallback<A, B> {
    /// `first`, then `then` for the names `first` does not have.
    pub fn new(first: A, then: B) -> Self {
        Fallback { first, then }
    }

    /// The handler asked first (and the only one asked for writes).
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The handler asked for the reads the first does not have.
    pub fn then(&self) -> &B {
        &self.then
    }

    /// Whether the first handler's refusal sends a read on to the second:
    /// ERROR 1, file not found.
    pub fn falls_through(error: &TftpError) -> bool {
        error.code == ErrorCode::FileNotFound
    }
}

impl<A: Handler, B: Handler> Handler for Fallback<A, B> {
    async fn read(&self, request: &Request) -> Result<ReadResponse, TftpError> {
        match self.first.read(request).await {
            Err(e) if Self::falls_through(&e) => self.then.read(request).await,
            other => other,
        }
    }

    async fn write(&self, request: &Request) -> Result<WriteResponse, TftpError> {
        self.first.write(request).await
    }
}

impl<A: blocking::Handler, B: blocking::Handler> blocking::Handler for Fallback<A, B> {
    fn read(&self, request: &Request) -> Result<ReadResponse<StdSource>, TftpError> {
        match self.first.read(request) {
            Err(e) if Self::falls_through(&e) => self.then.read(request),
            other => other,
        }
    }

    fn write(&self, request: &Request) -> Result<WriteResponse<StdSink>, TftpError> {
        self.first.write(request)
    }
}
