//! The listening socket's datagram I/O, through quinn-udp: each request's
//! destination address (`IP_PKTINFO` / `IPV6_RECVPKTINFO`), so that on a
//! wildcard listener (`0.0.0.0`, `[::]`) of a multi-homed host the transfer
//! socket binds to the address the client asked, and the listener's own
//! replies (busy, malformed) leave from it too, as tftpd-hpa does. A client
//! drops DATA from any other address.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::BorrowedFd;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Receive buffer of a listening socket: large enough for datagrams the
/// kernel coalesced (UDP GRO), which [`Received::datagrams`] splits again.
pub(crate) const LISTEN_BUFFER: usize = 65_536;

/// A listening socket's quinn-udp state (set up once per socket).
#[derive(Debug)]
pub(crate) struct Listener {
    state: UdpSocketState,
    bound: SocketAddr,
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
        Ok(Listener {
            state,
            bound: socket.local_addr()?,
        })
    }

    /// One `recvmsg` into `buf`.
    pub(crate) fn recv(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
        let mut meta = [RecvMeta::default()];
        let mut bufs = [IoSliceMut::new(buf)];
        // quinn-udp panics on a receive without a sender (a socket shut
        // down under us); that ends this listener with an error instead.
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.state.recv(UdpSockRef::from(&fd), &mut bufs, &mut meta)
        }));
        match received {
            Ok(result) => result?,
            Err(_) => return Err(shut_down_error()),
        };
        let [meta] = meta;
        if meta.len == 0 {
            shut_down(fd)?;
        }
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
    /// a unicast address of this host, else the bound address (a broadcast
    /// RRQ is answered from a socket on the wildcard address).
    pub(crate) fn local_for(&self, received: &Received) -> SocketAddr {
        let port = self.bound.port();
        match received.meta.dst_ip {
            Some(ip) if is_unicast(ip) && ip.is_ipv4() == self.bound.is_ipv4() => {
                SocketAddr::new(ip, port)
            }
            _ => self.bound,
        }
    }
}

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

/// An empty receive is either an empty datagram or a socket that was shut
/// down (quinn-udp cannot tell them apart: no sender comes with the latter,
/// and it reports a stale one). A shut-down socket polls as hung up; that
/// is an error, so the accept loop ends rather than spinning.
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

/// Whether a destination address can be a transfer socket's own: not
/// unspecified, multicast or the limited broadcast. A subnet-directed
/// broadcast passes here and fails to bind; the server then falls back to
/// the wildcard address.
fn is_unicast(ip: IpAddr) -> bool {
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
        for ip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            assert!(!is_unicast(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.2", "192.0.2.255", "::1", "fe80::1"] {
            assert!(is_unicast(ip.parse().unwrap()), "{ip}");
        }
    }
}
