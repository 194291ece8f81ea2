//! A boot fleet node in a few lines of the framework: per-machine
//! `pxelinux.cfg` files generated here, everything else (kernels, initrds)
//! from an origin through the cache, and the counters printed periodically.
//!
//! ```sh
//! cargo run -p tftp-origin --example fleet_node -- 'http://repo.internal/boot/{path}' 127.0.0.1:6969
//! tftp 127.0.0.1 6969 -c get pxelinux.cfg/default   # generated for this client
//! tftp 127.0.0.1 6969 -c get vmlinuz                # from the origin, cached
//! ```

use std::time::Duration;

use tftp_origin::Origin;
use tftp_tokio::{Handler, ReadResponse, RequestInfo, Server, TftpError};

/// Generated configs first, the origin for the rest.
struct Node {
    origin: Origin,
}

impl Handler for Node {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        if request.filename().starts_with(b"pxelinux.cfg/") {
            let ip = request.peer().ip().to_canonical();
            let config = format!(
                "DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img ip={ip} console=ttyS0\n"
            );
            return Ok(ReadResponse::from_bytes(config));
        }
        self.origin.read(request).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let template = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/boot/{path}".to_owned());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:6969".to_owned());
    let origin = Origin::builder(&template)?
        .cache_size(512 << 20)
        .on_lookup(|l| {
            eprintln!(
                "{} {} {}",
                l.peer,
                // Redacted: a URL may hold credentials or a token.
                tftp_origin::redact(l.url.as_deref().unwrap_or("-")),
                l.result.as_str()
            )
        })
        .build()?;
    let counters = origin.clone();
    let server = Server::builder(Node { origin })
        .listen(listen.parse()?)
        .on_session_end(|s| eprintln!("{} {} {:?} {} bytes", s.peer, s.filename_lossy(), s.outcome, s.bytes_sent))
        .on_server_stats(Duration::from_secs(10), move |s| {
            let o = counters.stats();
            eprintln!(
                "sessions {} active, cache {} hits / {} misses, origin {} requests, {} bytes, {} errors",
                s.sessions_active, o.hits, o.misses, o.origin_requests, o.origin_bytes, o.origin_errors
            );
        })
        .bind()?;
    eprintln!("serving {} on {listen}", tftp_origin::redact(&template));
    server
        .serve(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}
