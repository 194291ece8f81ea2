//! The listening sockets: those systemd passes (socket activation), the
//! inetd socket on standard input, and the `--listen` addresses bound here.

use std::net::UdpSocket;

use tftp_tokio::bind_listen_sockets;

use crate::cli::{Args, DEFAULT_LISTEN};
use crate::BoxError;

/// Every listening socket, opened with the privileges tftpd starts with:
/// systemd's, inetd's, then `workers` sockets (`SO_REUSEPORT`) for each
/// `--listen` address, or for [`DEFAULT_LISTEN`] when there is no other.
pub fn listening(args: &Args, workers: usize) -> Result<Vec<UdpSocket>, BoxError> {
    let mut sockets = Vec::new();
    // systemd socket activation (LISTEN_FDS, LISTEN_PID).
    let mut fds = listenfd::ListenFd::from_env();
    for i in 0..fds.len() {
        if let Some(socket) = fds.take_udp_socket(i)? {
            tracing::info!(fd = 3 + i, "socket from systemd");
            sockets.push(socket);
        }
    }
    if args.inetd {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        sockets.push(UdpSocket::from(fd));
        tracing::info!("socket from inetd (standard input)");
    }
    let mut listen = args.listen.clone();
    if listen.is_empty() && sockets.is_empty() {
        // NOTE(unwrap): a constant address, checked by a unit test.
        listen.push(DEFAULT_LISTEN.parse().expect("default address"));
    }
    for addr in listen {
        let bound = bind_listen_sockets(addr, workers)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        sockets.extend(bound);
    }
    Ok(sockets)
}

/// A TCP listener on `addr` for `what` (the HTTP side), bound with the
/// privileges tftpd starts with (port 80 needs them) and non-blocking.
pub fn bind_tcp(addr: std::net::SocketAddr, what: &str) -> Result<std::net::TcpListener, BoxError> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot serve {what} on {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
