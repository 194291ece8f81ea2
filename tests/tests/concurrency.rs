//! 1000 concurrent sessions against each runtime's server all complete
//! intact (driven by the tokio client: many clients cheaply on one runtime).

mod common;

use common::adapters::{Adapter, Cfg};
use tftp_tokio::Client;

fn thousand_concurrent_sessions<A: Adapter>() {
    let data = common::content(20_000, 12);
    let dir = common::root(&[("f.bin", &data)]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000u32 {
            tasks.spawn(async move {
                let client = Client::new(addr)
                    .blksize(if i % 2 == 0 { 1468 } else { 512 })
                    .windowsize(if i % 3 == 0 { 8 } else { 1 });
                let mut got = Vec::new();
                client.get("f.bin", &mut got).await.map(|_| got)
            });
        }
        let mut ok = 0;
        while let Some(result) = tasks.join_next().await {
            let got = result
                .unwrap()
                .unwrap_or_else(|e| panic!("transfer failed: {e}"));
            assert!(got == data);
            ok += 1;
        }
        ok
    });
    assert_eq!(ok, 1000, "{}", A::NAME);
    let stats = server.stats();
    assert_eq!(stats.sessions_started, 1000);
    assert_eq!(stats.rejected_by_limits, 0);
    server.stop();
}

for_each_adapter!(thousand_concurrent_sessions);
