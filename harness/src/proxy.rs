//! A TCP proxy in front of a server (an edge, PostgreSQL...) that can cut every connection
//! through it, refuse new ones for a while, or stall them (bytes stop flowing, nothing is
//! closed), or slow them (each chunk held a while): a phone out of coverage, a database behind
//! a failed network, a database that hangs, a slow link.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops accepting (connections already through it are cut on the
/// next [`TcpProxy::cut`] or end with their peers).
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<Notify>,
    blocked: Arc<AtomicBool>,
    stalled: Arc<watch::Sender<bool>>,
    delay_ms: Arc<AtomicU64>,
    target: Arc<Mutex<SocketAddr>>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(Notify::new());
        let blocked = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(watch::Sender::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let target = Arc::new(Mutex::new(target));
        let (c, b, st, d) = (
            cut.clone(),
            blocked.clone(),
            stalled.clone(),
            delay_ms.clone(),
        );
        let t = target.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if b.load(Ordering::SeqCst) {
                    continue; // dropped at once: unreachable
                }
                let cut = c.clone();
                let (up, down) = (st.subscribe(), st.subscribe());
                let (d_up, d_down) = (d.clone(), d.clone());
                let target = *t.lock().unwrap_or_else(|e| e.into_inner());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut in_read, mut in_write) = inbound.split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    tokio::select! {
                        _ = pump(&mut in_read, &mut out_write, up, &d_up) => {}
                        _ = pump(&mut out_read, &mut in_write, down, &d_down) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Ok(TcpProxy {
            addr,
            cut,
            blocked,
            stalled,
            delay_ms,
            target,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection through the proxy now (new ones still work).
    pub fn cut(&self) {
        self.cut.notify_waiters();
    }

    /// Cuts every connection and refuses new ones until [`TcpProxy::unblock`].
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut();
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    /// Stops moving bytes through every connection (open ones and new ones), closing
    /// nothing, until [`TcpProxy::unstall`]: the server seems to hang.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn unstall(&self) {
        self.stalled.send_replace(false);
    }

    /// Forwards new connections to `target` from now on. A proxy started before the ports of
    /// what it fronts are picked keeps its own port out of that pick.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Holds every chunk this long before passing it on, both ways (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is stalled, and for the delay.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    mut stalled: watch::Receiver<bool>,
    delay_ms: &AtomicU64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
