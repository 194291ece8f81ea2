//! Cross-runtime pairs: every runtime's client against every other
//! runtime's server (tokio, smol, async-std, std threads: 12 pairs),
//! downloads lock-step and windowed, and an upload.

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

/// One test per (client, server) pair of different runtimes: all 12 of the
/// four runtimes (a runtime against itself is every other suite's case).
macro_rules! cross_pairs {
    ($($test:ident: $client:ty => $server:ty,)*) => {
        $(
            #[test]
            fn $test() {
                pair::<$server, $client>();
            }
        )*
    };
}

cross_pairs! {
    tokio_client_smol_server: Tokio => Smol,
    tokio_client_async_std_server: Tokio => AsyncStd,
    tokio_client_blocking_server: Tokio => Blocking,
    smol_client_tokio_server: Smol => Tokio,
    smol_client_async_std_server: Smol => AsyncStd,
    smol_client_blocking_server: Smol => Blocking,
    async_std_client_tokio_server: AsyncStd => Tokio,
    async_std_client_smol_server: AsyncStd => Smol,
    async_std_client_blocking_server: AsyncStd => Blocking,
    blocking_client_tokio_server: Blocking => Tokio,
    blocking_client_smol_server: Blocking => Smol,
    blocking_client_async_std_server: Blocking => AsyncStd,
}
