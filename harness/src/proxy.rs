//! A TCP proxy in front of a server (an edge, PostgreSQL...) that can cut every connection
//! through it, and refuse new ones for a while: a phone out of coverage, a database behind a
//! failed network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops accepting (connections already through it are cut on the
/// next [`TcpProxy::cut`] or end with their peers).
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<Notify>,
    blocked: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(Notify::new());
        let blocked = Arc::new(AtomicBool::new(false));
        let (c, b) = (cut.clone(), blocked.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if b.load(Ordering::SeqCst) {
                    continue; // dropped at once: unreachable
                }
                let cut = c.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Ok(TcpProxy {
            addr,
            cut,
            blocked,
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
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
