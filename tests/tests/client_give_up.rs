//! The client gives up on a silent server after its default schedule: the
//! request and `DEFAULT_RETRIES` retransmissions, the timer doubling from
//! `DEFAULT_INITIAL_RTO` up to `DEFAULT_CLIENT_MAX_RTO` (23 s, about
//! tftp-hpa's 25 s), measured in tokio's paused, virtual time.

use std::time::Duration;

use tftp_io::DEFAULT_CLIENT_MAX_RTO;
use tftp_proto::options::{DEFAULT_INITIAL_RTO, DEFAULT_RETRIES};
use tftp_tokio::{Client, ClientError};

/// The default schedule: how many requests are sent, and when the client
/// gives up (the sum of the timeouts, each double the one before, capped).
fn default_schedule() -> (usize, Duration) {
    let sends = 1 + DEFAULT_RETRIES as usize;
    let mut rto = DEFAULT_INITIAL_RTO;
    let mut total = Duration::ZERO;
    for _ in 0..sends {
        total += rto;
        rto = (rto * 2).min(DEFAULT_CLIENT_MAX_RTO);
    }
    (sends, total)
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_is_given_up_after_the_default_schedule() {
    let (sends, give_up) = default_schedule();
    // 1 + 2 + 4 + 4 + 4 + 4 + 4 s with today's defaults.
    assert!(give_up < Duration::from_secs(26), "longer than tftp-hpa");
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
    // Virtual time: exact up to the runtime's millisecond timer wheel.
    assert!(
        waited >= give_up && waited < give_up + Duration::from_millis(50),
        "gave up after {waited:?}, want {give_up:?}"
    );
    let mut buf = [0u8; 600];
    let mut requests = 0;
    while silent.recv_from(&mut buf).is_ok() {
        requests += 1;
    }
    assert_eq!(requests, sends);
}
