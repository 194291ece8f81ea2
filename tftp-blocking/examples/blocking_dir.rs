//! Serves a directory read-only on std threads:
//! `cargo run -p tftp-blocking --example blocking_dir -- ROOT [ADDR]`.

use tftp_blocking::{DirHandler, Server};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| ".".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6969".into());
    let server = Server::builder(DirHandler::new(&root)?)
        .listen(addr.parse().expect("address"))
        .bind()?;
    println!("serving {root} on {:?}", server.local_addrs());
    server.serve()
}
