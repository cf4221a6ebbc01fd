//! quiz-local
