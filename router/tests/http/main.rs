//! The router end to end: started in-process on 127.0.0.1:0, driven over HTTP with reqwest,
//! over SQLite in a temporary file. One test binary, so the suite links once.

mod admin;
mod auth;
mod cluster;
mod content;
mod faults;
mod join;
mod leagues;
mod membership;
mod push;
mod quizzes;
mod support;
