//! A fault-injecting TCP proxy in front of an origin (after noxious and
//! toxiproxy): each connection it accepts gets one fault, drawn from a
//! seeded generator, for its whole life (rain-edge keeps origin connections
//! alive, so a faulty one carries several exchanges until it breaks).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Rng;

/// What happens to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass both ways untouched.
    Pass,
    /// The origin's first bytes are held back this long.
    Latency(Duration),
    /// The origin's bytes go out one at a time, 2 ms apart.
    Trickle,
    /// After this many of the origin's bytes, the connection is reset.
    ResetMid(usize),
    /// The request reaches the origin; the connection is then reset before
    /// any answer.
    ResetEarly,
}

/// How many connections got each fault.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub pass: AtomicU64,
    pub latency: AtomicU64,
    pub trickle: AtomicU64,
    pub reset_mid: AtomicU64,
    pub reset_early: AtomicU64,
}

impl FaultCounts {
    fn count(&self, f: Fault) {
        let c = match f {
            Fault::Pass => &self.pass,
            Fault::Latency(_) => &self.latency,
            Fault::Trickle => &self.trickle,
            Fault::ResetMid(_) => &self.reset_mid,
            Fault::ResetEarly => &self.reset_early,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `pass 10, latency 3, ...`
    pub fn summary(&self) -> String {
        format!(
            "pass {}, latency {}, trickle {}, reset mid-answer {}, reset before the answer {}",
            self.pass.load(Ordering::Relaxed),
            self.latency.load(Ordering::Relaxed),
            self.trickle.load(Ordering::Relaxed),
            self.reset_mid.load(Ordering::Relaxed),
            self.reset_early.load(Ordering::Relaxed),
        )
    }
}

/// A running proxy; stopped on drop.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies to `upstream`; about half the connections pass untouched,
    /// the rest get one of the faults.
    pub async fn start(upstream: SocketAddr, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let counts = Arc::new(FaultCounts::default());
        let rng = Arc::new(Mutex::new(Rng(seed.max(1))));
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let fault = {
                    let mut r = rng.lock().expect("rng");
                    match r.below(20) {
                        0..=10 => Fault::Pass,
                        11..=13 => Fault::Latency(Duration::from_millis(50 + r.below(450))),
                        14..=15 => Fault::Trickle,
                        16..=17 => Fault::ResetMid(1 + r.below(400) as usize),
                        _ => Fault::ResetEarly,
                    }
                };
                c.count(fault);
                conns.spawn(relay(client, upstream, fault));
                while conns.try_join_next().is_some() {}
            }
        });
        FaultProxy { addr, counts, task }
    }
}

fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, fault: Fault) {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let mut from_client = vec![0u8; 16 << 10];
    let mut from_origin = vec![0u8; 16 << 10];
    let mut sent = 0usize;
    let mut first = true;
    loop {
        tokio::select! {
            r = client.read(&mut from_client) => {
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if up.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
                if fault == Fault::ResetEarly {
                    // Let the origin read the request, then cut the client.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    reset(client);
                    return;
                }
            }
            r = up.read(&mut from_origin) => {
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &from_origin[..n];
                match fault {
                    Fault::Latency(d) if first => tokio::time::sleep(d).await,
                    Fault::Trickle => {
                        for b in chunk {
                            if client.write_all(std::slice::from_ref(b)).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        continue;
                    }
                    Fault::ResetMid(k) if sent + n >= k => {
                        let _ = client.write_all(&chunk[..k - sent]).await;
                        reset(client);
                        return;
                    }
                    _ => {}
                }
                first = false;
                if client.write_all(chunk).await.is_err() {
                    return;
                }
                sent += n;
            }
        }
    }
}
