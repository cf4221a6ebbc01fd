//! Knobs of a [`crate::QuizConnection`], each with a default fit for a phone on a mobile
//! network, and the refresh hook that gets a new ticket when the session token expires.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::router::{ClientError, JoinTicket};

/// How a connection behaves. `Options::default()` for real use, `Options::for_test()` for
/// tests (short timers).
#[derive(Clone, Debug)]
pub struct Options {
    /// Delays between reconnect attempts, and how many to make before giving up. Attempts
    /// are counted since the last successful join.
    pub reconnect: Backoff,
    /// Delays between re-sends of an answer refused with a retryable error.
    pub answer_retry: Backoff,
    /// How long `answer` keeps trying (across reconnects and retryable errors) before it
    /// returns [`crate::AnswerError::Timeout`].
    pub answer_timeout: Duration,
    /// How long `host` and `next` wait for their reply.
    pub request_timeout: Duration,
    /// A socket that brings no frame at all (not even the server's ~25 s ping) for this long
    /// is presumed dead and replaced. Also bounds a single write.
    pub idle_timeout: Duration,
    /// Bounds one TCP connect plus upgrade, and `connect`'s wait for the first welcome.
    pub connect_timeout: Duration,
    /// Events buffered for the application. When full, the connection stops reading the
    /// socket until the application catches up (and the server may drop it as too slow).
    /// The queue allocates 32 slots of 40 bytes at a time, whatever the capacity.
    pub event_capacity: usize,
    /// Frames queued for the writer task. When full, `answer`/`host` wait. Allocated 32
    /// slots of 64 bytes at a time.
    pub send_capacity: usize,
    /// Largest server frame accepted; a bigger one drops the socket.
    pub max_frame: usize,
    /// Source address for the TCP connections (a load generator spreads its sockets over
    /// 127.0.0.x to get more ephemeral ports).
    pub local_addr: Option<IpAddr>,
    /// Called when an edge refuses the session token as expired: returns a fresh ticket
    /// (usually by joining again through the router).
    pub refresh: Option<Refresh>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reconnect: Backoff {
                base: Duration::from_millis(250),
                cap: Duration::from_secs(15),
                max_attempts: 15,
            },
            answer_retry: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(2),
                max_attempts: 30,
            },
            answer_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 64,
            send_capacity: 16,
            max_frame: 1 << 20,
            local_addr: None,
            refresh: None,
        }
    }
}

impl Options {
    /// Short timers for tests against servers on 127.0.0.1.
    pub fn for_test() -> Self {
        Self {
            reconnect: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(100),
                max_attempts: 10,
            },
            answer_retry: Backoff {
                base: Duration::from_millis(5),
                cap: Duration::from_millis(50),
                max_attempts: 20,
            },
            answer_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ..Self::default()
        }
    }

    /// Sets the refresh hook.
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = Some(refresh);
        self
    }
}

/// The future a [`Refresh`] hook returns.
pub type RefreshFuture = Pin<Box<dyn Future<Output = Result<JoinTicket, ClientError>> + Send>>;

/// An async callback that returns a new [`JoinTicket`]; see [`Options::refresh`] and
/// [`crate::RouterClient::refresher`]. Cloning shares the callback.
#[derive(Clone)]
pub struct Refresh(Arc<dyn Fn() -> RefreshFuture + Send + Sync>);

impl Refresh {
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<JoinTicket, ClientError>> + Send + 'static,
    {
        Refresh(Arc::new(move || Box::pin(f())))
    }

    pub(crate) fn call(&self) -> RefreshFuture {
        (self.0)()
    }
}

impl fmt::Debug for Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Refresh(..)")
    }
}
