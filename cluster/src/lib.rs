//! The cluster's transport: QUIC between nodes, and between the router and nodes.
//!
//! Every connection is mutually authenticated under one cluster CA (TLS 1.3, ALPN
//! `quiz-cluster/1`), then both sides exchange a versioned Hello that names the node and the
//! cluster. After that, a [`Peer`] carries cluster frames (`u32 BE length | u8 version |
//! bincode`, encoded only by `quiz_protocol::cluster`) on QUIC streams: one request and one
//! reply per stream, or long-lived streams such as an edge's subscription to a quiz.
//!
//! This crate knows the protocol's message types and nothing of quizzes: which message goes
//! where, and what it does, is the node's and the router's business.
//!
//! - [`tls`]: the cluster CA ([`ClusterCa`]) and a process's trust ([`ClusterTls`]).
//! - [`config`]: [`EndpointConfig`], every limit with its default and cost.
//! - [`endpoint`]: [`Endpoint`], binding, accepting and connecting.
//! - [`handshake`]: the Hello exchange and its checks.
//! - [`peer`]: [`Peer`], one authenticated connection and its streams.
//! - [`frame`]: [`FrameReader`] and [`FrameWriter`], frames on one stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiz_cluster::ClusterError> {
//! use std::time::Duration;
//! use quiz_cluster::{ClusterCa, Endpoint, EndpointConfig};
//! use quiz_protocol::{NodeId, cluster::ClusterMessage};
//!
//! let ca = ClusterCa::generate("local")?;
//! let config = EndpointConfig::new("local");
//! let a = Endpoint::bind("127.0.0.1:0".parse().unwrap(), NodeId("node-1".into()),
//!                        &ca.tls_for("node-1")?, config.clone())?;
//! let b = Endpoint::bind("127.0.0.1:0".parse().unwrap(), NodeId("node-2".into()),
//!                        &ca.tls_for("node-2")?, config)?;
//! let to_a = b.connect(a.local_addr(), Some(&NodeId("node-1".into()))).await?;
//! let from_b = a.accept().await.expect("endpoint open");
//! tokio::spawn(async move {
//!     while let Some(Ok((first, mut writer, _reader))) = from_b.accept_stream().await {
//!         let _ = writer.send(&first).await; // echo
//!         let _ = writer.finish();
//!     }
//! });
//! let ring = ClusterMessage::Ring { epoch: 1, members: vec![] };
//! assert_eq!(to_a.request(&ring, Duration::from_secs(1)).await?, ring);
//! # Ok(()) }
//! ```

pub mod config;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod peer;
pub mod tls;

pub use config::EndpointConfig;
pub use endpoint::Endpoint;
pub use error::{ClusterError, TlsError};
pub use frame::{FrameReader, FrameWriter};
pub use handshake::{CLOSE_OK, CLOSE_REFUSED};
pub use peer::{IncomingStream, Peer};
pub use tls::{ALPN, ClusterCa, ClusterTls, Issued};
