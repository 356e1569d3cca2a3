//! An HTTP/1.1 load generator for `scripts/hostile-bench`: N keep-alive connections, and
//! every answer's status and latency kept, so the latency of the requests served (200) and of
//! those shed (503) are reported apart, which wrk and oha do not do.
//!
//! `cargo run --release --example hammer -- HOST:PORT PATHS_FILE CONNECTIONS SECONDS [BACKOFF_MS] [RATE]`
//!
//! Closed loop (no `RATE`, or 0): each connection sends the next path as soon as the last
//! answer is in. With `BACKOFF_MS`, a connection that was answered 503 waits that long before
//! its next request, as a storefront does that shows no list rather than asking again at
//! once; without it every connection asks again at once, so the requests outstanding never
//! fall below `CONNECTIONS` and their latency is `CONNECTIONS` / throughput however many are
//! shed.
//!
//! Open loop (`RATE` requests a second in all): shoppers arrive at that rate whatever the
//! server does, as at a real storefront, spread evenly over the connections. A request whose
//! connection was still waiting for the previous answer at its due time is sent as soon as that
//! answer is in, and its latency counts from the due time, so a slow server cannot hide its
//! queue by holding the generator back (coordinated omission). Arrivals still waiting for
//! their connection when the run ends are not counted, so under a growing backlog the
//! latencies are lower bounds.
//!
//! Prints one line: `RESULT total_rps=… ok_rps=… shed_rps=… ok_p50_ms=… ok_p99_ms=…
//! ok_max_ms=… shed_p50_ms=… shed_p99_ms=… other=… errors=…`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status and latency in microseconds of each answer.
type Answers = Vec<(u16, u32)>;

/// Reads one response from `stream` (with `buffer` holding what was read beyond the last one);
/// returns its status.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<u16> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed");
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    buffer.drain(..head_end + length);
    Ok(status)
}

async fn connection(
    address: String,
    paths: Arc<Vec<String>>,
    first: usize,
    until: Instant,
    backoff: Duration,
    schedule: Option<(Instant, Duration)>,
) -> (Answers, usize) {
    let mut answers = Vec::new();
    let mut errors = 0;
    let mut next = first;
    let mut sent = 0u32;
    while Instant::now() < until {
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut buffer = Vec::new();
        while Instant::now() < until {
            let path = &paths[next % paths.len()];
            next += 1;
            let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
            let mut started = Instant::now();
            if let Some((start, interval)) = schedule {
                let due = start + interval * sent;
                sent += 1;
                if due > started {
                    tokio::time::sleep_until(due.into()).await;
                    // Timer lateness is the generator's, not the server's.
                    started = Instant::now();
                } else {
                    started = due;
                }
                if started >= until {
                    break;
                }
            }
            if stream.write_all(request.as_bytes()).await.is_err() {
                errors += 1;
                break;
            }
            match read_response(&mut stream, &mut buffer).await {
                Ok(status) => {
                    let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    answers.push((status, micros));
                    if status == 503 && !backoff.is_zero() && schedule.is_none() {
                        tokio::time::sleep(backoff).await;
                    }
                }
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    (answers, errors)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[at]) / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (address, paths, connections, seconds, backoff, rate) = match args.as_slice() {
        [address, paths, connections, seconds] => (address, paths, connections, seconds, "0", "0"),
        [address, paths, connections, seconds, backoff] => {
            (address, paths, connections, seconds, backoff.as_str(), "0")
        }
        [address, paths, connections, seconds, backoff, rate] => (
            address,
            paths,
            connections,
            seconds,
            backoff.as_str(),
            rate.as_str(),
        ),
        _ => anyhow::bail!(
            "usage: hammer HOST:PORT PATHS_FILE CONNECTIONS SECONDS [BACKOFF_MS] [RATE]"
        ),
    };
    let backoff = Duration::from_millis(backoff.parse()?);
    let rate: f64 = rate.parse()?;
    anyhow::ensure!(
        rate.is_finite() && rate >= 0.0,
        "RATE must be a number >= 0"
    );
    let paths: Vec<String> = std::fs::read_to_string(paths)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!paths.is_empty(), "no paths");
    let paths = Arc::new(paths);
    let connections: usize = connections.parse()?;
    let seconds: f64 = seconds.parse()?;
    // An open loop starts its clock once every connection has had time to open, so a SYN the
    // full listen queue dropped (retried after a second) is not counted as server latency.
    let warm_up = if rate > 0.0 {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    let start = Instant::now() + warm_up;
    let until = start + Duration::from_secs_f64(seconds);
    let stride = paths.len() / connections.max(1) + 1;
    // Each connection sends every `connections / rate` seconds, staggered so the arrivals are
    // even in time.
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(connections as f64 / rate));
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let schedule =
                interval.map(|every| (start + every.mul_f64(i as f64 / connections as f64), every));
            tokio::spawn(connection(
                address.clone(),
                Arc::clone(&paths),
                i * stride,
                until,
                backoff,
                schedule,
            ))
        })
        .collect();
    let (mut ok, mut shed, mut other, mut errors) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for task in tasks {
        let (answers, failed) = task.await?;
        errors += failed;
        for (status, micros) in answers {
            match status {
                200 => ok.push(micros),
                503 => shed.push(micros),
                _ => other += 1,
            }
        }
    }
    ok.sort_unstable();
    shed.sort_unstable();
    let total = ok.len() + shed.len() + other;
    println!(
        "RESULT total_rps={:.0} ok_rps={:.0} shed_rps={:.0} ok_p50_ms={:.2} ok_p99_ms={:.2} \
         ok_max_ms={:.2} shed_p50_ms={:.2} shed_p99_ms={:.2} other={other} errors={errors}",
        total as f64 / seconds,
        ok.len() as f64 / seconds,
        shed.len() as f64 / seconds,
        percentile(&ok, 0.5),
        percentile(&ok, 0.99),
        ok.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        percentile(&shed, 0.5),
        percentile(&shed, 0.99),
    );
    Ok(())
}
