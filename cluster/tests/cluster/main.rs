//! The cluster transport end to end: real QUIC endpoints on 127.0.0.1:0, good peers and bad
//! ones. One test binary, so the suite links once.

mod ca;
mod flood;
mod frames;
mod refusals;
mod support;
mod transport;
