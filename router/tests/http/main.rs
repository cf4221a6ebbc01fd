//! The router end to end: started in-process on 127.0.0.1:0, driven over HTTP with reqwest,
//! over SQLite in a temporary file (or the in-memory fake with `QUIZ_TEST_STORE=memory`).
//! One test binary, so the suite links once.

mod admin;
mod auth;
mod content;
mod faults;
mod join;
mod quizzes;
mod support;
