//! Cross-runtime pairs: every runtime's client against every runtime's
//! server, both directions, lock-step and windowed.

mod common;

use common::adapters::{Adapter, AsyncStd, Blocking, Cfg, Opts, Smol, Tokio};

fn pair<S: Adapter, C: Adapter>() {
    let data = common::content(70_000, 21);
    let dir = common::root(&[("f.bin", &data)]);
    let server = S::serve_dir(
        dir.path(),
        &Cfg {
            allow_write: true,
            ..Cfg::default()
        },
    );
    for o in [
        Opts::default(),
        Opts {
            blksize: Some(1468),
            windowsize: Some(16),
            tsize: true,
            ..Opts::default()
        },
    ] {
        let (got, _) = C::get(server.addr, "f.bin", o)
            .unwrap_or_else(|e| panic!("{} client, {} server: {e}", C::NAME, S::NAME));
        assert!(got == data, "{} client, {} server", C::NAME, S::NAME);
    }
    C::put(
        server.addr,
        "up.bin",
        &data,
        Opts {
            blksize: Some(1024),
            windowsize: Some(4),
            ..Opts::default()
        },
    )
    .unwrap();
    assert!(std::fs::read(dir.path().join("up.bin")).unwrap() == data);
    server.stop();
}

#[test]
fn blocking_client_smol_server() {
    pair::<Smol, Blocking>();
}

#[test]
fn smol_client_tokio_server() {
    pair::<Tokio, Smol>();
}

#[test]
fn tokio_client_blocking_server() {
    pair::<Blocking, Tokio>();
}

#[test]
fn async_std_client_tokio_server() {
    pair::<Tokio, AsyncStd>();
}

#[test]
fn blocking_client_tokio_server() {
    pair::<Tokio, Blocking>();
}

#[test]
fn tokio_client_smol_server() {
    pair::<Smol, Tokio>();
}
