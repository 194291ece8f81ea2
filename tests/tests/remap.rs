//! tftpd-hpa remap rules in front of a directory, on every runtime, with the
//! rule files real deployments have: Windows / WDS backslashes, an old
//! `/tftpboot/` prefix, refusals, rules for reads or writes only, and
//! per-client names from the client's address.

mod common;

use std::sync::Arc;

use common::adapters::{Adapter, Cfg, Opts};
use tftp_blocking::ClientError;
use tftp_io::remap::RemapRules;
use tftp_proto::packet::ErrorCode;

const RULES: &str = r"
# Windows and WDS clients send backslashes.
rg  \\   /
# Old configs ask for /tftpboot/...; the root is /tftpboot now.
r   ^/tftpboot/
# Nobody reads the private area.
a   ^private/
# Uploads land in incoming/, whatever they ask for ...
rP  ^(.*/)?([^/]*)$   incoming/\2
# ... and reads of by-ip/ get the client's own file (PXELINUX's hex names).
rG  ^by-ip$   hosts/\x
";

fn server_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Server { code, message, .. }) => (code, message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn real_world_rules<A: Adapter>() {
    let root = common::root(&[
        ("boot/x64/wdsnbp.com", b"wds"),
        ("pxelinux.0", b"loader"),
        ("private/key", b"secret"),
        ("hosts/7F000001", b"config of 127.0.0.1"),
        ("incoming/.keep", b""),
    ]);
    let cfg = Cfg {
        allow_write: true,
        remap: Some(Arc::new(RemapRules::parse(RULES.as_bytes()).unwrap())),
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let o = Opts::default();
    for (asked, want) in [
        (r"boot\x64\wdsnbp.com", &b"wds"[..]),
        (r"\boot\x64\wdsnbp.com", b"wds"),
        ("/tftpboot/pxelinux.0", b"loader"),
        ("pxelinux.0", b"loader"),
        ("by-ip", b"config of 127.0.0.1"),
    ] {
        let (got, stats) =
            A::get(server.addr, asked, o).unwrap_or_else(|e| panic!("{} {asked}: {e}", A::NAME));
        assert_eq!(got, want, "{} {asked}", A::NAME);
        assert_eq!(stats.bytes_received, want.len() as u64);
    }
    assert_eq!(
        server_error(A::get(server.addr, "private/key", o)).0,
        ErrorCode::AccessViolation
    );
    // The rule for reads does not touch writes, and the rule for writes
    // puts the upload under incoming/.
    A::put(server.addr, r"logs\boot.log", b"uploaded", o).unwrap();
    assert_eq!(
        std::fs::read(root.path().join("incoming/boot.log")).unwrap(),
        b"uploaded"
    );
    assert!(!root.path().join("logs").exists());
    let sessions = std::sync::Arc::clone(&server.sessions);
    server.stop();
    // The session statistics keep the name the client asked for.
    assert!(sessions
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.filename_lossy() == r"boot\x64\wdsnbp.com"));
}

fn refusal_messages<A: Adapter>() {
    let root = common::root(&[("f", b"x")]);
    let rules = r"a ^ No\ access\ for\ \i";
    let cfg = Cfg {
        remap: Some(Arc::new(RemapRules::parse(rules.as_bytes()).unwrap())),
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let (code, message) = server_error(A::get(server.addr, "f", Opts::default()));
    assert_eq!(code, ErrorCode::AccessViolation);
    assert_eq!(message, "No access for 127.0.0.1");
    server.stop();
}

for_each_adapter!(real_world_rules, refusal_messages);
