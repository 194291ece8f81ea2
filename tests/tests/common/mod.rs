//! Shared helpers for the integration tests: a served temporary directory,
//! deterministic file contents, a server on an ephemeral loopback port.
#![allow(dead_code)]

use std::net::SocketAddr;

/// Deterministic bytes of `len` (a seeded xorshift).
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Text with LF and CR for netascii tests.
pub fn text(len: usize) -> Vec<u8> {
    let unit = b"line of text\nwith a bare \r carriage return\r\n";
    unit.iter().copied().cycle().take(len).collect()
}

/// A temporary directory with files.
pub fn root(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, bytes).expect("write");
    }
    dir
}

/// A raw UDP peer for scripted exchanges (blocking, with a 5 s limit).
pub struct Raw {
    pub socket: std::net::UdpSocket,
}

impl Raw {
    pub fn new() -> Self {
        Self::on("127.0.0.1")
    }

    pub fn on(ip: &str) -> Self {
        let socket = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        Raw { socket }
    }

    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).unwrap();
    }

    /// The next datagram, or panic after 5 s.
    pub fn recv(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = self
            .socket
            .recv_from(&mut buf)
            .expect("no datagram within 5 s");
        buf.truncate(n);
        (buf, from)
    }
}

impl Raw {
    /// Fetches a file of less than 512 bytes lock-step without options:
    /// its bytes, or the code of the server's ERROR.
    pub fn get_small(&self, server: SocketAddr, name: &str) -> Result<Vec<u8>, u16> {
        self.send(server, &rrq(name, &[]));
        let (packet, from) = self.recv();
        match packet.get(..2) {
            Some([0, 3]) => {
                assert_eq!(&packet[2..4], &[0, 1], "DATA 1");
                assert!(packet.len() < 4 + 512, "a small file");
                self.send(from, &ack(1));
                Ok(packet[4..].to_vec())
            }
            Some([0, 5]) => Err(u16::from_be_bytes([packet[2], packet[3]])),
            _ => panic!("unexpected answer {packet:?}"),
        }
    }
}

/// A RRQ for `name` with option pairs.
pub fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.extend_from_slice(b"octet\0");
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

pub fn ack(block: u16) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&block.to_be_bytes());
    v
}

pub fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut v = vec![0, 5];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v.push(0);
    v
}

pub mod adapters;
