//! Downloads a file and prints the throughput:
//! `cargo run --release -p tftp-blocking --example blocking_fetch -- ADDR FILE BLKSIZE WINDOWSIZE`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let client = tftp_blocking::Client::new(a[1].parse()?)
        .blksize(a[3].parse()?)
        .windowsize(a[4].parse()?)
        .tsize(true);
    let start = std::time::Instant::now();
    let stats = client.get(&a[2], &mut std::io::sink())?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} bytes in {secs:.3} s = {:.1} MB/s",
        stats.bytes_received,
        stats.bytes_received as f64 / secs / 1e6
    );
    Ok(())
}
