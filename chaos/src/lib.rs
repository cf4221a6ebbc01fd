//! quiz-chaos
