//! The listening socket's datagram I/O, through quinn-udp: each request's
//! destination address (`IP_PKTINFO` / `IPV6_RECVPKTINFO`), so that on a
//! wildcard listener (`0.0.0.0`, `[::]`) of a multi-homed host the transfer
//! socket binds to the address the client asked, and the listener's own
//! replies (busy, malformed) leave from it too, as tftpd-hpa does. A client
//! drops DATA from any other address.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::BorrowedFd;

use std::collections::HashMap;
use std::sync::Mutex;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Socket, Type};

/// Receive buffer of a blocking listening socket (one datagram per
/// receive): large enough for datagrams the kernel coalesced (UDP GRO),
/// which [`Received::datagrams`] splits again.
pub(crate) const LISTEN_BUFFER: usize = 65_536;
/// Datagrams an async listening socket takes with one `recvmmsg` (a burst
/// of requests is drained in batches).
pub const LISTEN_BATCH: usize = 32;
/// Bytes of each slot of such a batch: as large as a blocking listener's
/// buffer, for datagrams the kernel coalesced (UDP GRO).
pub(crate) const LISTEN_SLOT: usize = LISTEN_BUFFER;
/// The kernel receive buffer asked for each listening socket, so a boot
/// storm's requests wait in it rather than being dropped: `SO_RCVBUFFORCE`
/// when privileged, else `SO_RCVBUF`, which the kernel caps at
/// `net.core.rmem_max` (raise it with `sysctl -w net.core.rmem_max=...`).
/// What was granted is logged.
pub const LISTEN_RCVBUF: usize = 8 * 1024 * 1024;

/// Receive slots of a listening socket: up to `slots` datagrams per
/// receive, each in its own slot.
pub(crate) struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    meta: Vec<RecvMeta>,
    count: usize,
}

impl RecvBatch {
    /// `slots` slots of at least `min_slot` bytes.
    pub(crate) fn new(slots: usize, min_slot: usize) -> Self {
        let slot = min_slot.max(LISTEN_SLOT);
        RecvBatch {
            buf: vec![0; slot.saturating_mul(slots.max(1))],
            slot,
            meta: vec![RecvMeta::default(); slots.max(1)],
            count: 0,
        }
    }

    /// What the last receive got: each sender with its slot's bytes.
    pub(crate) fn received(&self) -> impl Iterator<Item = (Received, &[u8])> + '_ {
        self.meta
            .iter()
            .zip(self.buf.chunks(self.slot))
            .take(self.count)
            .map(|(&meta, buf)| (Received { meta }, buf))
    }
}

/// A listening socket's quinn-udp state (set up once per socket).
#[derive(Debug)]
pub(crate) struct Listener {
    state: UdpSocketState,
    bound: SocketAddr,
    /// Destination addresses known to be unicast (true) or broadcast.
    unicast: Mutex<HashMap<IpAddr, bool>>,
}

/// One receive: the sender, the destination address and the datagrams.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    meta: RecvMeta,
}

impl Listener {
    /// Enables the destination-address control messages on `socket` (which
    /// quinn-udp leaves non-blocking).
    pub(crate) fn new(socket: &UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(socket))?;
        let granted =
            rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, LISTEN_RCVBUF)
                .or_else(|_| {
                    rustix::net::sockopt::set_socket_recv_buffer_size(socket, LISTEN_RCVBUF)
                })
                .and_then(|()| rustix::net::sockopt::socket_recv_buffer_size(socket));
        match granted {
            // Linux reports twice what it grants (the rest is its overhead).
            Ok(bytes) if bytes / 2 < LISTEN_RCVBUF => tracing::info!(
                granted = bytes / 2,
                asked = LISTEN_RCVBUF,
                "listening socket receive buffer capped: raise net.core.rmem_max"
            ),
            Ok(bytes) => tracing::debug!(granted = bytes / 2, "listening socket receive buffer"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot size the listening socket's receive buffer")
            }
        }
        Ok(Listener {
            state,
            bound: socket.local_addr()?,
            unicast: Mutex::new(HashMap::new()),
        })
    }

    /// The address the socket is bound to.
    pub(crate) fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// One `recvmmsg` into the slots of `batch` (on a non-blocking socket:
    /// it returns what is queued, up to a slot each).
    pub(crate) fn recv_batch(&self, fd: BorrowedFd<'_>, batch: &mut RecvBatch) -> io::Result<()> {
        batch.count = 0;
        let mut bufs: Vec<IoSliceMut<'_>> = batch
            .buf
            .chunks_mut(batch.slot)
            .map(IoSliceMut::new)
            .collect();
        shut_down(fd)?;
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.state
                .recv(UdpSockRef::from(&fd), &mut bufs, &mut batch.meta)
        }));
        batch.count = match received {
            Ok(result) => result?,
            Err(_) => return Err(shut_down_error()),
        };
        Ok(())
    }

    /// One `recvmsg` into `buf`.
    pub(crate) fn recv(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
        let mut meta = [RecvMeta::default()];
        let mut bufs = [IoSliceMut::new(buf)];
        // A socket shut down under us returns receives without a sender,
        // which quinn-udp does not expect: check first (one poll), and end
        // this listener with an error rather than let it spin or panic.
        shut_down(fd)?;
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.state.recv(UdpSockRef::from(&fd), &mut bufs, &mut meta)
        }));
        match received {
            Ok(result) => result?,
            Err(_) => return Err(shut_down_error()),
        };
        let [meta] = meta;
        Ok(Received { meta })
    }

    /// Sends `bytes` to `to` from the local address `from` (a request's
    /// destination) when it is one of ours.
    pub(crate) fn send(
        &self,
        fd: BorrowedFd<'_>,
        to: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> io::Result<()> {
        let mut transmit = Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: (from.ip() != self.bound.ip()).then_some(from.ip()),
        };
        match self.state.try_send(UdpSockRef::from(&fd), &transmit) {
            // A source the kernel will not send from (a subnet broadcast the
            // request was sent to): let it choose.
            Err(e) if transmit.src_ip.is_some() && e.kind() != io::ErrorKind::WouldBlock => {
                transmit.src_ip = None;
                self.state.try_send(UdpSockRef::from(&fd), &transmit)
            }
            result => result,
        }
    }

    /// The local address a request arrived on: its destination when that is
    /// a unicast address (only this host's reach it), else the bound address
    /// (a broadcast or multicast RRQ is answered from a socket on the
    /// wildcard address, which the kernel sends from the interface's own).
    pub(crate) fn local_for(&self, received: &Received) -> SocketAddr {
        let port = self.bound.port();
        match received.meta.dst_ip {
            Some(ip)
                if ip != self.bound.ip()
                    && ip.is_ipv4() == self.bound.is_ipv4()
                    && self.is_unicast(ip) =>
            {
                SocketAddr::new(ip, port)
            }
            _ => self.bound,
        }
    }

    /// Whether `ip` is a unicast address, remembered per address: a
    /// subnet-directed broadcast (`192.0.2.255`) can be bound like any
    /// address, but a socket bound to it never hears the client's ACKs. The
    /// kernel tells them apart: `connect()` to a broadcast address fails
    /// without `SO_BROADCAST`.
    fn is_unicast(&self, ip: IpAddr) -> bool {
        if !plausibly_unicast(ip) {
            return false;
        }
        let mut known = self.unicast.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&unicast) = known.get(&ip) {
            return unicast;
        }
        let probe = Socket::new(
            Domain::for_address(SocketAddr::new(ip, 0)),
            Type::DGRAM,
            None,
        )
        .and_then(|s| s.connect(&SocketAddr::new(ip, DISCARD_PORT).into()));
        let unicast = match probe {
            Ok(()) => true,
            // What a broadcast address answers.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => false,
            // No descriptor for the probe, say: not known, not remembered.
            Err(_) => return false,
        };
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        known.insert(ip, unicast);
        unicast
    }
}

/// The port the probe of [`Listener::is_unicast`] connects to (nothing is
/// ever sent).
const DISCARD_PORT: u16 = 9;

/// Destination addresses remembered per listening socket (they are this
/// host's addresses and broadcast addresses, a short list).
const MAX_REMEMBERED: usize = 256;

impl Received {
    /// The sender.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.meta.addr
    }

    /// The datagrams in `buf` (one, unless the kernel coalesced several; an
    /// empty datagram is one too).
    pub(crate) fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let data = buf.get(..self.meta.len).unwrap_or_default();
        let stride = match self.meta.stride {
            0 => data.len().max(1),
            stride => stride,
        };
        let count = data.len().div_ceil(stride).max(1);
        (0..count).map(move |i| {
            let start = i.saturating_mul(stride);
            let end = start.saturating_add(stride).min(data.len());
            data.get(start..end).unwrap_or_default()
        })
    }
}

/// Whether the socket was shut down (it then polls as hung up): an error, so
/// the accept loop ends. A receive on it would return at once, without a
/// sender.
fn shut_down(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::RDHUP)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&now)) {
        Ok(1..) if fds.iter().any(|f| f.revents().contains(PollFlags::RDHUP)) => {
            Err(shut_down_error())
        }
        _ => Ok(()),
    }
}

fn shut_down_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the listening socket was shut down",
    )
}

/// Whether a destination address can be a transfer socket's own, as far as
/// the address alone tells: not unspecified, multicast or the limited
/// broadcast (subnet-directed broadcasts need [`Listener::is_unicast`]).
fn plausibly_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4 == Ipv4Addr::BROADCAST),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(len: usize, stride: usize) -> Vec<Vec<u8>> {
        let meta = RecvMeta {
            len,
            stride,
            ..RecvMeta::default()
        };
        Received { meta }
            .datagrams(b"abcdefgh")
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn coalesced_datagrams_are_split_by_stride() {
        assert_eq!(split(7, 3), [&b"abc"[..], b"def", b"g"]);
        assert_eq!(split(6, 3), [&b"abc"[..], b"def"]);
        assert_eq!(split(5, 0), [&b"abcde"[..]]);
        assert_eq!(split(5, 5), [&b"abcde"[..]]);
        // An empty datagram is still one (it counts as a bad request).
        assert_eq!(split(0, 0), [&b""[..]]);
    }

    #[test]
    fn only_unicast_destinations_are_bound() {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let listener = Listener::new(&socket).unwrap();
        for ip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            assert!(!listener.is_unicast(ip.parse().unwrap()), "{ip}");
        }
        // The loopback network's broadcast address (lo has 127.0.0.1/8).
        assert!(!listener.is_unicast("127.255.255.255".parse().unwrap()));
        for ip in ["127.0.0.1", "127.0.0.2", "::1"] {
            assert!(listener.is_unicast(ip.parse().unwrap()), "{ip}");
            assert!(listener.is_unicast(ip.parse().unwrap()), "{ip}, remembered");
        }
    }
}
