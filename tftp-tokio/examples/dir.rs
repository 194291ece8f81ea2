//! Serves a directory read-only: `cargo run -p tftp-tokio --example dir -- ROOT [ADDR]`
//! (defaults: `.` on 127.0.0.1:6969). Fetch with `curl -o f tftp://127.0.0.1:6969/FILE`.

use tftp_tokio::{DirHandler, Server};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| ".".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6969".into());
    let server = Server::builder(DirHandler::new(&root)?)
        .listen(addr.parse().expect("listen address"))
        .bind()?;
    println!("serving {root} on {:?}; Ctrl-C stops", server.local_addrs());
    server
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
