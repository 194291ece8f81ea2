//! Prints every session's statistics when it ends and the server counters
//! every 10 seconds: `cargo run -p tftp-tokio --example stats -- [ROOT]`.

use std::time::Duration;

use tftp_tokio::{DirHandler, Server};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let server = Server::builder(DirHandler::new(&root)?)
        .listen("127.0.0.1:6969".parse().unwrap())
        .on_session_end(|s| {
            println!(
                "session peer={} file={} mode={} options={:?} outcome={:?} blocks={} bytes={} retransmits={} timeouts={} duration={:?}",
                s.peer,
                s.filename_lossy(),
                s.mode,
                s.options_negotiated,
                s.outcome,
                s.blocks_sent.max(s.blocks_received),
                s.bytes_sent.max(s.bytes_received),
                s.retransmits,
                s.timeouts,
                s.finished.map(|f| f - s.started),
            )
        })
        .on_server_stats(Duration::from_secs(10), |s| {
            println!(
                "server started={} completed={} failed={} active={} bytes_sent={} retransmits={} errors={:?}",
                s.sessions_started, s.sessions_completed, s.sessions_failed, s.sessions_active, s.bytes_sent, s.retransmits, s.errors_by_code
            )
        })
        .bind()?;
    println!("serving {root} on {:?}", server.local_addrs());
    server
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
