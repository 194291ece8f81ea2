//! A client's MAC address from the kernel's neighbour table (ARP for IPv4,
//! NDP for IPv6), through rtnetlink: for dnsmasq's `tftp-unique-root=mac`
//! ([`ClientKey::Mac`](crate::ClientKey)) and for handlers that choose
//! content by machine ([`mac_of`]).
//!
//! A client on the server's own link has an entry as soon as it has sent
//! anything (its request, say); one behind a router has none (the router's
//! MAC is not the client's), nor has one served over loopback. Entries being
//! resolved or that failed are not answers.

use std::fmt;
use std::net::IpAddr;

/// Most neighbour entries one lookup reads (the kernel's default table holds
/// at most 1024 per family: `gc_thresh3`).
pub const MAX_NEIGHBOURS: usize = 65_536;

/// How long one lookup waits for the kernel's answer.
pub const NEIGHBOUR_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// A 48-bit MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// pxelinux's name for the machine: `01-aa-bb-cc-dd-ee-ff` (ARP type 1,
    /// Ethernet, then the address in lower-case hex).
    pub fn pxelinux_name(&self) -> String {
        let [a, b, c, d, e, f] = self.0;
        format!("01-{a:02x}-{b:02x}-{c:02x}-{d:02x}-{e:02x}-{f:02x}")
    }
}

impl fmt::Display for Mac {
    /// `aa:bb:cc:dd:ee:ff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The MAC address the kernel's neighbour table holds for `ip` (IPv4-mapped
/// IPv6 looked up as IPv4), if it holds a usable one: reachable, stale,
/// being confirmed, or permanent. None elsewhere, and on systems other than
/// Linux.
pub fn mac_of(ip: IpAddr) -> Option<Mac> {
    #[cfg(target_os = "linux")]
    {
        match linux::lookup(ip.to_canonical()) {
            Ok(mac) => mac,
            Err(e) => {
                tracing::debug!(error = %e, %ip, "neighbour table lookup failed");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ip;
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::IpAddr;

    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
    };
    use netlink_packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
    };
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    use super::{Mac, MAX_NEIGHBOURS, NEIGHBOUR_TIMEOUT};

    /// Receive buffer: a dump comes in datagrams of a page or two.
    const BUFFER: usize = 64 * 1024;

    /// Dumps the table of `ip`'s family and finds `ip` in it.
    pub(super) fn lookup(ip: IpAddr) -> io::Result<Option<Mac>> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(NEIGHBOUR_TIMEOUT),
        )?;
        let mut request = NeighbourMessage::default();
        request.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_DUMP | NLM_F_REQUEST;
        header.sequence_number = 1;
        let mut message = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::GetNeighbour(request)),
        );
        message.finalize();
        let mut out = vec![0; message.buffer_len()];
        message.serialize(&mut out);
        socket.send(&out, 0)?;
        let mut buf = vec![0u8; BUFFER];
        let mut found = None;
        let mut seen = 0usize;
        loop {
            let size = socket.recv(&mut &mut buf[..], 0)?.min(BUFFER);
            let mut offset = 0;
            while offset < size {
                let bytes = buf.get(offset..size).unwrap_or_default();
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = message.header.length as usize;
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(found),
                    NetlinkPayload::Error(e) => {
                        return Err(io::Error::other(format!("netlink: {e:?}")))
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(entry)) => {
                        seen += 1;
                        if found.is_none() {
                            found = usable(&entry, ip);
                        }
                    }
                    _ => {}
                }
                if length == 0 || seen > MAX_NEIGHBOURS {
                    return Ok(found);
                }
                offset = offset.saturating_add(length);
            }
        }
    }

    /// The entry's MAC, if it is `ip`'s and usable.
    fn usable(entry: &NeighbourMessage, ip: IpAddr) -> Option<Mac> {
        if !matches!(
            entry.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
        ) {
            return None;
        }
        let mut dest = None;
        let mut lladdr = None;
        for attribute in &entry.attributes {
            match attribute {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    dest = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    dest = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(bytes) => lladdr = Some(bytes.as_slice()),
                _ => {}
            }
        }
        if dest != Some(ip) {
            return None;
        }
        let bytes: [u8; 6] = lladdr?.try_into().ok()?;
        Some(Mac(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let mac = Mac([0x02, 0, 0x5e, 0x10, 0xab, 0xcd]);
        assert_eq!(mac.to_string(), "02:00:5e:10:ab:cd");
        assert_eq!(mac.pxelinux_name(), "01-02-00-5e-10-ab-cd");
    }

    /// Loopback has no neighbour entries; the lookup answers, and says
    /// none (it would fail only without netlink).
    #[test]
    fn loopback_has_no_mac() {
        assert_eq!(mac_of("127.0.0.1".parse().unwrap()), None);
        assert_eq!(mac_of("::1".parse().unwrap()), None);
        #[cfg(target_os = "linux")]
        assert!(matches!(
            linux::lookup("127.0.0.1".parse().unwrap()),
            Ok(None)
        ));
    }
}
