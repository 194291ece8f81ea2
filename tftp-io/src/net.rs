//! Socket helpers shared by the adapters: listening sockets (optionally with
//! `SO_REUSEPORT`) and transfer sockets (optionally in a port range).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` UDP sockets on `addr`, all on the same port, with
/// `SO_REUSEPORT` when `count > 1` so the kernel spreads requests across
/// them. Non-blocking, IPv6 sockets v6-only. Useful to bind before dropping
/// privileges.
pub fn bind_listen_sockets(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(count.max(1));
    let mut port = addr.port();
    for _ in 0..count.max(1) {
        let socket = bind_udp(SocketAddr::new(addr.ip(), port), count > 1)?;
        port = socket.local_addr()?.port();
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The bound addresses of `sockets` (a server's listening addresses).
pub fn local_addrs(sockets: &[UdpSocket]) -> Vec<SocketAddr> {
    sockets.iter().filter_map(|s| s.local_addr().ok()).collect()
}

/// Binds one non-blocking UDP socket.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A seed for [`bind_transfer`] from the kernel's random source, so
/// transfer ports in a range cannot be predicted (the clock when the
/// kernel's source fails).
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(bytes),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Binds a transfer socket (the server's transfer ID) on `local_ip` (the
/// address the request arrived on), on any port or on a port in `range`
/// (tried from a position derived from `seed`). If `local_ip` cannot be
/// bound (a subnet broadcast the request was sent to, a link-local address
/// without its scope), the wildcard address of its family is used.
pub fn bind_transfer(
    local_ip: IpAddr,
    range: Option<(u16, u16)>,
    seed: u64,
) -> io::Result<UdpSocket> {
    match bind_transfer_on(local_ip, range, seed) {
        Err(e)
            if !local_ip.is_unspecified()
                && matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::InvalidInput
                ) =>
        {
            let wildcard = match local_ip {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            bind_transfer_on(wildcard, range, seed)
        }
        result => result,
    }
}

fn bind_transfer_on(
    local_ip: IpAddr,
    range: Option<(u16, u16)>,
    seed: u64,
) -> io::Result<UdpSocket> {
    let Some((low, high)) = range else {
        return bind_udp(SocketAddr::new(local_ip, 0), false);
    };
    let span = u64::from(high - low) + 1;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port in range");
    for i in 0..span.min(256) {
        let port = low + (seed.wrapping_add(i.wrapping_mul(7919)) % span) as u16;
        match bind_udp(SocketAddr::new(local_ip, port), false) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
