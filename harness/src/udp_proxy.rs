//! A UDP proxy in front of a server (a node's QUIC endpoint) that can drop a share of the
//! datagrams and delay the rest: a lossy, slow link between nodes. Each client address gets a
//! socket of its own towards the server, so replies find their way back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops it.
pub struct UdpProxy {
    addr: SocketAddr,
    link: Arc<Link>,
    target: Arc<Mutex<SocketAddr>>,
    task: JoinHandle<()>,
}

/// What the link does to each datagram.
struct Link {
    /// Parts per million dropped.
    loss_ppm: AtomicU64,
    delay_ms: AtomicU64,
    rng: Mutex<rand::rngs::StdRng>,
}

impl Link {
    /// Whether to pass a datagram, and after how long.
    fn decide(&self) -> Option<Duration> {
        let loss = self.loss_ppm.load(Ordering::Relaxed);
        if loss > 0 {
            let roll: u64 = self
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random_range(0..1_000_000);
            if roll < loss {
                return None;
            }
        }
        Some(Duration::from_millis(self.delay_ms.load(Ordering::Relaxed)))
    }
}

impl UdpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`; `seed` makes the losses
    /// repeatable for the same traffic.
    pub async fn start(target: SocketAddr, seed: u64) -> anyhow::Result<UdpProxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let link = Arc::new(Link {
            loss_ppm: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        });
        let target = Arc::new(Mutex::new(target));
        let (l, t) = (link.clone(), target.clone());
        let task = tokio::spawn(async move {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            let mut returns = tokio::task::JoinSet::new();
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let back = match backs.get(&client) {
                    Some(b) => b.clone(),
                    None => {
                        let Ok(b) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        let target = *t.lock().unwrap_or_else(|e| e.into_inner());
                        if b.connect(target).await.is_err() {
                            continue;
                        }
                        let b = Arc::new(b);
                        backs.insert(client, b.clone());
                        returns.spawn(replies(b.clone(), front.clone(), client, l.clone()));
                        b
                    }
                };
                forward(&l, buf[..n].to_vec(), move |d| {
                    let back = back.clone();
                    async move {
                        let _ = back.send(&d).await;
                    }
                });
            }
        });
        Ok(UdpProxy {
            addr,
            link,
            target,
            task,
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards datagrams of new clients to `target` from now on (see
    /// [`crate::TcpProxy::retarget`]).
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Drops this share (0.0–1.0) of the datagrams, each way.
    pub fn set_loss(&self, share: f64) {
        let ppm = (share.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.link.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Holds every datagram this long, each way.
    pub fn set_delay(&self, delay: Duration) {
        self.link
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server's datagrams back to `client`.
async fn replies(back: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, link: Arc<Link>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        // A server that is down answers with ICMP, which a connected socket reports as an
        // error on the next receive; it may come back on the same port.
        let Ok(n) = back.recv(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let front = front.clone();
        forward(&link, buf[..n].to_vec(), move |d| async move {
            let _ = front.send_to(&d, client).await;
        });
    }
}

/// Sends `datagram` now, later, or never, as the link decides.
fn forward<F, Fut>(link: &Link, datagram: Vec<u8>, send: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match link.decide() {
        None => {}
        Some(delay) if delay.is_zero() => {
            tokio::spawn(send(datagram));
        }
        Some(delay) => {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(datagram).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_pass_both_ways_and_stop_when_every_one_is_lost() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy = UdpProxy::start(server.local_addr().unwrap(), 1)
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", proxy.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", from).await.unwrap();
        let (n, back) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], back), (&b"pong"[..], proxy.addr()));

        proxy.set_loss(1.0);
        client.send_to(b"lost", proxy.addr()).await.unwrap();
        let got =
            tokio::time::timeout(Duration::from_millis(200), server.recv_from(&mut buf)).await;
        assert!(
            got.is_err(),
            "a datagram passed a link that loses every one"
        );
    }
}
