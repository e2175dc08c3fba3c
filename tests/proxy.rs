//! A TCP proxy that puts a bad network between flow and the S3 test server: some connections
//! are closed at once, cut after some bytes in either direction (a truncated request or
//! response), or stalled for a while. Which connections and how is drawn from a seeded
//! generator, so a failure names its seed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy)]
enum Fault {
    Close,
    CutRequest(usize),
    CutResponse(usize),
    Stall(Duration),
}

pub(crate) struct FaultyProxy {
    pub(crate) url: String,
    faults: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl FaultyProxy {
    /// Forwards to `upstream` (`http://host:port`); one connection in `every` gets a fault.
    pub(crate) fn start(upstream: &str, every: usize, seed: u64) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (faults, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let rng = Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed)));
        let (count, halt) = (Arc::clone(&faults), Arc::clone(&stop));
        std::thread::spawn(move || {
            for (i, client) in listener.incoming().enumerate() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let fault = (i % every == every - 1).then(|| {
                    let mut rng = rng.lock().unwrap();
                    match rng.random_range(0..4) {
                        0 => Fault::Close,
                        1 => Fault::CutRequest(rng.random_range(0..200_000)),
                        2 => Fault::CutResponse(rng.random_range(0..200_000)),
                        _ => Fault::Stall(Duration::from_millis(rng.random_range(100..800))),
                    }
                });
                if fault.is_some() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let upstream = upstream.clone();
                std::thread::spawn(move || serve(client, &upstream, fault));
            }
        });
        Self { url: format!("http://{addr}"), faults, stop, addr }
    }

    /// How many connections were given a fault so far.
    pub(crate) fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop so that it sees `stop`
    }
}

fn serve(client: TcpStream, upstream: &str, fault: Option<Fault>) {
    if let Some(Fault::Close) = fault {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else { return };
    let (request_cut, response_cut, stall) = match fault {
        Some(Fault::CutRequest(n)) => (Some(n), None, None),
        Some(Fault::CutResponse(n)) => (None, Some(n), None),
        Some(Fault::Stall(d)) => (None, None, Some(d)),
        _ => (None, None, None),
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || pump(c2, s2, request_cut, None));
    pump(server, client, response_cut, stall);
    let _ = up.join();
}

/// Copies `from` to `to` until either side closes; after `cut` bytes, closes both. A `stall`
/// holds the first bytes back for that long.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<usize>, stall: Option<Duration>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut left = cut.unwrap_or(usize::MAX);
    let mut stall = stall;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(d) = stall.take() {
            std::thread::sleep(d);
        }
        let n = n.min(left);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        left -= n;
        if left == 0 {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
