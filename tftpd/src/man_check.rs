//! The man pages in `man/` are generated from the clap definitions
//! (clap_mangen), checked in for packagers, and checked here: a test fails
//! when a flag changed and its page did not. `UPDATE_MAN=1 cargo test -p
//! tftpd man_page` writes them again.

use std::path::Path;

/// Asserts that `man/FILE` is what clap_mangen makes of `command` (or, with
/// `UPDATE_MAN=1`, writes it).
pub fn check(command: clap::Command, file: &str) {
    let mut page = Vec::new();
    // The section is the file's extension: 8 for the daemon, 1 for the client.
    let section = file.rsplit('.').next().unwrap_or("1");
    clap_mangen::Man::new(command)
        .section(section)
        .render(&mut page)
        .expect("render the man page");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(file);
    if std::env::var_os("UPDATE_MAN").is_some() {
        std::fs::create_dir_all(path.parent().expect("man/")).expect("mkdir man");
        std::fs::write(&path, &page).expect("write the man page");
    }
    let current = std::fs::read(&path).unwrap_or_default();
    assert!(
        current == page,
        "{} is not the page of today's flags: run UPDATE_MAN=1 cargo test -p tftpd man_page",
        path.display()
    );
}
