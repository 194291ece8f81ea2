//! 1000 concurrent sessions against one server all complete intact.

mod common;

use tftp_tokio::{Client, DirHandler, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_sessions() {
    let data = common::content(20_000, 12);
    let dir = common::root(&[("f.bin", &data)]);
    let builder = Server::builder(DirHandler::new(dir.path()).unwrap())
        .listen("127.0.0.1:0".parse().unwrap())
        .max_sessions_per_peer(2000);
    let server = common::start_with(builder).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let addr = server.addr;
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
    assert_eq!(ok, 1000);
    let stats = server.stats.snapshot();
    assert_eq!(stats.sessions_started, 1000);
    assert_eq!(stats.rejected_by_limits, 0);
    server.stop().await;
}
