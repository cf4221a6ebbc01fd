//! quiz-client
