//! A body streamed straight through to one client (not cacheable:
//! `no-store`, larger than the cache, caching off), holding its origin
//! request slot.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use super::object::FIRST_WINDOW;
use super::slot::Slot;
use crate::fetch::Body;
use crate::stats::Counters;

/// A body streamed straight to one client, each chunk within `timeout`,
/// holding its origin request slot. A body longer or shorter than its
/// announced length fails. Until its client asks past its first block (it
/// has not answered yet), the slot may be taken back for a request that
/// waits (see [`OriginBuilder::max_requests`](crate::OriginBuilder::max_requests)):
/// the transfer then fails.
pub struct DirectReader {
    body: Body,
    chunk: Bytes,
    timeout: Duration,
    pending: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Arc<Counters>,
    announced: Option<u64>,
    received: u64,
    /// Bytes handed to the client.
    delivered: u64,
    first_block: u64,
    committed: bool,
    slot: Slot,
}

impl DirectReader {
    pub(crate) fn new(
        body: Body,
        announced: Option<u64>,
        slot: Slot,
        first_block: u64,
        timeout: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        slot.set_idle(true);
        DirectReader {
            body,
            chunk: Bytes::new(),
            timeout,
            pending: None,
            counters,
            announced,
            received: 0,
            delivered: 0,
            first_block,
            committed: false,
            slot,
        }
    }

    fn read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        while self.chunk.is_empty() {
            match self.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.counters
                        .origin_bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    self.received = self.received.saturating_add(chunk.len() as u64);
                    if self.announced.is_some_and(|a| self.received > a) {
                        return Poll::Ready(Err(io::Error::other(
                            "origin sent more than it announced",
                        )));
                    }
                    self.chunk = chunk;
                    self.pending = None;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    return Poll::Ready(match self.announced {
                        Some(a) if self.received < a => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("origin body ended at {} of {a} bytes", self.received),
                        )),
                        _ => Ok(()),
                    })
                }
                Poll::Pending => {
                    let timeout = self.timeout;
                    let sleep = self
                        .pending
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("origin sent nothing for {timeout:?}"),
                        )));
                    }
                    return Poll::Pending;
                }
            }
        }
        let n = self.chunk.len().min(buf.remaining());
        buf.put_slice(&self.chunk.split_to(n));
        self.delivered = self.delivered.saturating_add(n as u64);
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for DirectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectReader").finish_non_exhaustive()
    }
}

impl AsyncRead for DirectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.slot.preempted() {
            return Poll::Ready(Err(io::Error::other(
                "its origin request went to a client that answered",
            )));
        }
        let end = this.delivered.saturating_add(buf.remaining() as u64);
        if end > this.first_block.min(FIRST_WINDOW) {
            this.committed = true;
        }
        this.slot.set_idle(false);
        let read = this.read(cx, buf);
        if !this.committed {
            this.slot.set_idle(true);
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::slot::Slots;

    async fn read(r: &mut DirectReader, n: usize) -> io::Result<usize> {
        let mut buf = vec![0u8; n];
        let mut buf = ReadBuf::new(&mut buf);
        std::future::poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, &mut buf)).await?;
        Ok(buf.filled().len())
    }

    /// A body streamed through to a client that has not asked past its
    /// first block gives its slot to a waiting request (and then fails);
    /// one whose client asked for more keeps it.
    #[tokio::test]
    async fn streamed_bodies_of_unanswered_clients_give_their_slot() {
        let slots = Slots::new(1, Arc::default());
        for asked_more in [false, true] {
            let body: Body = Box::pin(futures_util::StreamExt::chain(
                futures_util::stream::iter([Ok(Bytes::from(vec![1u8; 8192]))]),
                futures_util::stream::pending(),
            ));
            let slot = slots.acquire().await;
            let mut reader = DirectReader::new(
                body,
                Some(1 << 20),
                slot,
                512,
                Duration::from_secs(60),
                Arc::default(),
            );
            assert_eq!(read(&mut reader, 512).await.unwrap(), 512);
            if asked_more {
                assert_eq!(read(&mut reader, 512).await.unwrap(), 512);
            }
            let waiting = tokio::time::timeout(Duration::from_millis(300), slots.acquire()).await;
            if asked_more {
                assert!(waiting.is_err(), "an answered client's body lost its slot");
            } else {
                assert!(
                    waiting.is_ok(),
                    "the unanswered client's body kept its slot"
                );
                assert!(read(&mut reader, 512).await.is_err());
            }
        }
    }
}
