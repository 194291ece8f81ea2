//! The client gives up on a silent server in about 25 s by default, as
//! tftp-hpa does (measured in tokio's paused, virtual time).

use std::time::Duration;

use tftp_tokio::{Client, ClientError};

#[tokio::test(start_paused = true)]
async fn a_silent_server_is_given_up_after_23_seconds() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let client = Client::new(silent.local_addr().unwrap());
    let start = tokio::time::Instant::now();
    let mut out = Vec::new();
    let result = client.get("pxelinux.0", &mut out).await;
    let waited = start.elapsed();
    assert!(
        matches!(result, Err(ClientError::Timeout { .. })),
        "{result:?}"
    );
    // 1 + 2 + 4 + 4 + 4 + 4 + 4 s: the RRQ and six retransmissions.
    assert_eq!(waited.as_secs(), 23, "{waited:?}");
    let mut buf = [0u8; 600];
    let mut requests = 0;
    while silent.recv_from(&mut buf).is_ok() {
        requests += 1;
    }
    assert_eq!(requests, 7);
    assert!(waited < Duration::from_secs(26));
}
