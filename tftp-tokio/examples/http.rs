//! One handler, two protocols: a per-machine iPXE script generated from the
//! client's address, and files from a directory, served by TFTP (the first
//! stage) and by HTTP (what iPXE fetches next), from the same handler.
//!
//! `cargo run -p tftp-tokio --features http --example http -- DIR`, then
//! `curl tftp://127.0.0.1:6969/boot.ipxe` and
//! `curl http://127.0.0.1:8080/boot.ipxe` (the same script), and
//! `curl -r 0-99 http://127.0.0.1:8080/vmlinuz` for a file from DIR.

use std::sync::Arc;

use tftp_tokio::http::HttpServer;
use tftp_tokio::{DirHandler, Handler, ReadResponse, RequestInfo, Server, TftpError};

struct Boot {
    files: DirHandler,
}

impl Handler for Boot {
    async fn read(&self, req: &RequestInfo) -> Result<ReadResponse, TftpError> {
        if req.filename() == b"boot.ipxe" {
            // The next stage comes over HTTP, from this same server.
            let ip = req.peer().ip();
            let host = req
                .local()
                .map_or("127.0.0.1".to_owned(), |l| l.ip().to_string());
            let script = format!(
                "#!ipxe\nkernel http://{host}:8080/vmlinuz hostname=node-{}\ninitrd http://{host}:8080/initrd.img\nboot\n",
                ip.to_string().replace(['.', ':'], "-")
            );
            return Ok(ReadResponse::from_bytes(script));
        }
        self.files.read(req).await
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".to_owned());
    let handler = Arc::new(Boot {
        files: DirHandler::new(dir)?,
    });
    let tftp = Server::builder(handler.clone())
        .listen("127.0.0.1:6969".parse().unwrap())
        .on_session_end(|s| println!("tftp {} {} {:?}", s.peer, s.filename_lossy(), s.outcome))
        .bind()?;
    let http = HttpServer::builder(handler)
        .on_request_end(|s| println!("http {} {} {}", s.peer, s.path_lossy(), s.status))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    let (tftp_done, http_done) = tokio::join!(
        tftp.serve(async {
            tokio::signal::ctrl_c().await.ok();
        }),
        http.serve(vec![listener], async {
            tokio::signal::ctrl_c().await.ok();
        }),
    );
    tftp_done?;
    http_done
}
