//! Every adapter's client against its own server for every option
//! combination: blksize 8/512/1468/65464 × windowsize 1/16/64, with and
//! without tsize and timeout, octet and netascii; content compared exactly.

mod common;

use common::adapters::{Adapter, Cfg, Opts};

fn every_option_combination<A: Adapter>() {
    let data = common::content(120_000, 1);
    let small = common::content(1000, 2);
    let text = common::text(20_000);
    let dir = common::root(&[
        ("big.bin", &data),
        ("small.bin", &small),
        ("text.txt", &text),
    ]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    for blksize in [8u16, 512, 1468, 65464] {
        for windowsize in [1u16, 16, 64] {
            // timeout 1: a client asking for `timeout` dallies longer (it must
            // outlast the server's retransmissions); the smallest keeps this quick.
            for (tsize, timeout) in [(false, None), (true, Some(1u8))] {
                let (name, want) = if blksize == 8 {
                    ("small.bin", &small)
                } else {
                    ("big.bin", &data)
                };
                let o = Opts {
                    blksize: Some(blksize),
                    windowsize: Some(windowsize),
                    timeout,
                    tsize,
                    netascii: false,
                };
                let (got, stats) = A::get(server.addr, name, o)
                    .unwrap_or_else(|e| panic!("{} b={blksize} w={windowsize}: {e}", A::NAME));
                assert!(
                    got == *want,
                    "{} b={blksize} w={windowsize}: content differs",
                    A::NAME
                );
                let n = stats.options_negotiated;
                assert_eq!(n.blksize, Some(blksize));
                let cap =
                    (tftp_proto::options::DEFAULT_MAX_WINDOW_BYTES / usize::from(blksize)).max(1);
                assert_eq!(
                    usize::from(n.window_size()),
                    usize::from(windowsize).min(cap).min(64)
                );
                assert_eq!(n.tsize, tsize.then_some(want.len() as u64));
                assert_eq!(n.timeout, timeout);
            }
        }
    }
    for windowsize in [1u16, 16] {
        let o = Opts {
            windowsize: Some(windowsize),
            netascii: true,
            ..Opts::default()
        };
        let (got, _) = A::get(server.addr, "text.txt", o).unwrap();
        assert!(got == text, "{} netascii w={windowsize}", A::NAME);
    }
    // netascii upload: the client encodes, the server decodes into the file.
    server.stop();
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            allow_write: true,
            ..Cfg::default()
        },
    );
    let o = Opts {
        windowsize: Some(8),
        netascii: true,
        ..Opts::default()
    };
    let stats = A::put(server.addr, "uploaded.txt", &text, o).unwrap();
    assert!(
        std::fs::read(dir.path().join("uploaded.txt")).unwrap() == text,
        "{} netascii put",
        A::NAME
    );
    // Loopback loses nothing: a window's DATA arriving together (two per
    // receive on the server) are all taken. Dropping the second of each
    // receive would re-send half the blocks; a stalled machine may cost a
    // timeout or two (the retransmission timer starts at a few ms).
    assert!(
        stats.retransmits * 4 < stats.blocks_sent,
        "{} windowed put re-sent {} of {} DATA",
        A::NAME,
        stats.retransmits,
        stats.blocks_sent
    );
    let o = Opts {
        windowsize: Some(16),
        ..Opts::default()
    };
    let big = common::content(300_000, 9);
    let stats = A::put(server.addr, "uploaded.bin", &big, o).unwrap();
    assert!(std::fs::read(dir.path().join("uploaded.bin")).unwrap() == big);
    assert!(
        stats.retransmits * 4 < stats.blocks_sent,
        "{} windowed put re-sent {} of {} DATA",
        A::NAME,
        stats.retransmits,
        stats.blocks_sent
    );
    let (got, stats) = A::get(server.addr, "small.bin", Opts::default()).unwrap();
    assert_eq!(got, small);
    assert!(stats.options_negotiated.is_empty());
    server.stop();
}

for_each_adapter!(every_option_combination);
