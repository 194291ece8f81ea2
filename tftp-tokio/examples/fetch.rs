//! Fetches a file repeatedly and prints the throughput of each run and the
//! median (a small measurement tool):
//! `cargo run --release -p tftp-tokio --example fetch -- ADDR FILE BLKSIZE WINDOWSIZE RUNS`

use std::time::Instant;

use tftp_tokio::Client;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: fetch ADDR FILE BLKSIZE WINDOWSIZE RUNS");
        std::process::exit(2);
    }
    let addr = args[1].parse()?;
    let blksize: u16 = args[3].parse()?;
    let windowsize: u16 = args[4].parse()?;
    let runs: usize = args[5].parse()?;
    let mut client = Client::new(addr).blksize(blksize).tsize(true);
    if windowsize > 1 {
        client = client.windowsize(windowsize);
    }
    let mut rates = Vec::new();
    for run in 0..runs {
        let mut sink = tokio::io::sink();
        let start = Instant::now();
        let stats = client.get(&args[2], &mut sink).await?;
        let secs = start.elapsed().as_secs_f64();
        let mbps = stats.bytes_received as f64 / secs / 1e6;
        println!(
            "run {run}: {} bytes in {secs:.3} s = {mbps:.1} MB/s (negotiated {:?})",
            stats.bytes_received, stats.options_negotiated
        );
        rates.push(mbps);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!("median {:.1} MB/s", rates[rates.len() / 2]);
    Ok(())
}
