//! The tokio client against the tokio server for every option combination:
//! blksize 8/512/1468/65464 × windowsize 1/16/64, with and without tsize and
//! timeout, octet and netascii; content compared byte for byte.

mod common;

use tftp_proto::packet::Mode;
use tftp_proto::stats::Outcome;
use tftp_tokio::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_option_combination() {
    let data = common::content(200_000, 1);
    let small = common::content(1000, 2);
    let text = common::text(50_000);
    let dir = common::root(&[
        ("big.bin", &data),
        ("small.bin", &small),
        ("text.txt", &text),
    ]);
    let server = common::serve_dir(dir.path()).await;

    for blksize in [8u16, 512, 1468, 65464] {
        for windowsize in [1u16, 16, 64] {
            for (tsize, timeout) in [(false, None), (true, Some(2u8))] {
                let file = if blksize == 8 {
                    ("small.bin", &small)
                } else {
                    ("big.bin", &data)
                };
                let mut client = Client::new(server.addr)
                    .blksize(blksize)
                    .windowsize(windowsize)
                    .tsize(tsize);
                if let Some(t) = timeout {
                    client = client.timeout(t);
                }
                let mut got = Vec::new();
                let stats = client
                    .get(file.0, &mut got)
                    .await
                    .unwrap_or_else(|e| panic!("b={blksize} w={windowsize}: {e}"));
                assert!(
                    got == *file.1,
                    "b={blksize} w={windowsize} tsize={tsize}: content differs"
                );
                let o = stats.options_negotiated;
                assert_eq!(o.blksize, Some(blksize));
                // Window × block size is capped by the server's bytes in flight.
                let cap =
                    (tftp_proto::options::DEFAULT_MAX_WINDOW_BYTES / usize::from(blksize)).max(1);
                assert_eq!(
                    usize::from(o.window_size()),
                    usize::from(windowsize).min(cap)
                );
                assert_eq!(o.tsize, tsize.then_some(file.1.len() as u64));
                assert_eq!(o.timeout, timeout);
                assert_eq!(stats.retransmits, 0);
            }
        }
    }

    // netascii both ways round trip: the server encodes, the client decodes.
    for windowsize in [1u16, 16] {
        let mut got = Vec::new();
        Client::new(server.addr)
            .mode(Mode::Netascii)
            .windowsize(windowsize)
            .get("text.txt", &mut got)
            .await
            .unwrap();
        assert!(got == text, "netascii w={windowsize}");
    }
    // Without any option: plain RFC 1350.
    let mut got = Vec::new();
    let stats = Client::new(server.addr)
        .get("small.bin", &mut got)
        .await
        .unwrap();
    assert_eq!(got, small);
    assert!(stats.options_negotiated.is_empty());

    let sessions = server.sessions.lock().unwrap().clone();
    assert!(
        sessions
            .iter()
            .all(|s| s.outcome == Some(Outcome::Completed)),
        "{sessions:?}"
    );
    server.stop().await;
}
