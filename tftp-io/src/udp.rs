//! Datagram I/O of transfer sockets through quinn-udp (whose `unsafe` stays
//! inside it): the DATA packets of a window leave with one `sendmsg` (UDP
//! GSO: the kernel cuts them apart again), and a receive takes up to two
//! datagrams with one `recvmmsg`, which also tells when the socket's queue
//! is empty (fewer datagrams than slots) so the next wait goes straight to
//! the reactor instead of failing a receive first.
//!
//! Where the kernel has no GSO (before Linux 4.18, other systems), a
//! session sends one datagram per syscall, as before.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tftp_proto::session::Batch;

/// Most bytes of one GSO send: the datagrams and their headers must fit
/// one 64 KiB IP packet before the kernel cuts it.
pub const MAX_BATCH_BYTES: usize = 65_000;
/// Largest GSO segment (DATA packet) to a non-loopback IPv4 peer: a
/// 1500-byte Ethernet MTU less the IPv4 and UDP headers (blksize 1468).
/// The kernel refuses larger segments than the path's MTU instead of
/// fragmenting them, so larger blocks go one per syscall.
pub const MAX_SEGMENT_V4: usize = 1472;
/// The same for IPv6 (40-byte header: blksize 1448).
pub const MAX_SEGMENT_V6: usize = 1452;
/// Receive buffers up to this size get a second slot of the same size.
pub(crate) const MAX_SPARE_FOR: usize = 1024;
/// Whether quinn-udp receives with `recvmmsg` here (several datagrams per
/// call); elsewhere it takes one, and fewer than the slots would not mean
/// that the queue is empty.
pub(crate) const MULTI_RECV: bool = !cfg!(any(
    target_vendor = "apple",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "solaris",
    target_os = "illumos"
));

/// quinn-udp's view of what this host's sockets can do (GSO segments), made
/// once on a probe socket: sending with it sets nothing on the socket used.
fn state() -> io::Result<&'static UdpSocketState> {
    static STATE: OnceLock<Option<UdpSocketState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .or_else(|_| UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)))
                .ok()?;
            UdpSocketState::new(UdpSockRef::from(&probe)).ok()
        })
        .as_ref()
        .ok_or_else(|| io::Error::other("no UDP socket could be opened"))
}

/// How many GSO segments this host's kernel takes, as found at first use.
/// (quinn-udp lowers its own figure to 1 for good after one failed GSO
/// send, which one client behind a small-MTU path would cause for every
/// session; here only that session stops batching.)
fn gso_segments() -> usize {
    static SEGMENTS: OnceLock<usize> = OnceLock::new();
    *SEGMENTS.get_or_init(|| state().map_or(1, UdpSocketState::max_gso_segments))
}

/// How a session to `peer` may batch its DATA packets on this host.
pub(crate) fn batch_for(peer: SocketAddr) -> Batch {
    let segments = gso_segments();
    if segments <= 1 {
        return Batch::ONE;
    }
    let max_segment = match peer {
        p if p.ip().is_loopback() => MAX_BATCH_BYTES,
        SocketAddr::V4(_) => MAX_SEGMENT_V4,
        SocketAddr::V6(_) => MAX_SEGMENT_V6,
    };
    Batch {
        segments,
        bytes: MAX_BATCH_BYTES,
        max_segment,
    }
}

/// Sends `bytes` to `to` (from `src`, when given: a single-port session
/// answers from the address its request came to): one datagram, or
/// consecutive datagrams of `segment_size` bytes (the last may be shorter)
/// with one GSO send. Fails
/// with `WouldBlock` when nothing was sent. If a GSO send fails otherwise,
/// the datagrams are sent one by one, and `Ok(false)` says to stop
/// batching.
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    to: SocketAddr,
    bytes: &[u8],
    segment_size: usize,
    src: Option<IpAddr>,
) -> io::Result<bool> {
    let state = state()?;
    let batched = segment_size > 0 && segment_size < bytes.len();
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents: bytes,
        segment_size: batched.then_some(segment_size),
        src_ip: src,
    };
    match state.try_send(UdpSockRef::from(&fd), &transmit) {
        Err(e) if batched && e.kind() != io::ErrorKind::WouldBlock => {
            tracing::debug!(error = %e, "GSO send failed; sending datagram by datagram");
            for datagram in bytes.chunks(segment_size) {
                let one = Transmit {
                    contents: datagram,
                    segment_size: None,
                    ..transmit
                };
                // A datagram that does not go out is a loss the session
                // recovers from.
                let _ = state.try_send(UdpSockRef::from(&fd), &one);
            }
            Ok(false)
        }
        result => result.map(|()| true),
    }
}

/// What one [`recv`] got: up to two datagrams (length and sender), the
/// first in the first slot.
pub(crate) type Got = [Option<(usize, SocketAddr)>; 2];

/// One `recvmmsg` into `first` and, when it is not empty, `second`.
/// Returns true when there were two slots and only one datagram came: the
/// socket's queue is empty now.
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    first: &mut [u8],
    second: &mut [u8],
    got: &mut Got,
) -> io::Result<bool> {
    let state = state()?;
    let two = !second.is_empty();
    let mut meta = [RecvMeta::default(); 2];
    let mut slots = [IoSliceMut::new(first), IoSliceMut::new(second)];
    let slots = if two { &mut slots[..] } else { &mut slots[..1] };
    // quinn-udp expects every datagram to have a sender, which holds on a
    // UDP socket nobody shuts down; should it not, this is an error, never
    // a panic.
    let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        state.recv(UdpSockRef::from(&fd), slots, &mut meta)
    }))
    .map_err(|_| io::Error::other("receive without a sender"))??;
    *got = [None, None];
    for (slot, m) in got.iter_mut().zip(&meta).take(received) {
        *slot = Some((m.len, m.addr));
    }
    Ok(two && received < 2)
}
