//! quiz-bench
