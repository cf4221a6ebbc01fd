//! quiz-router
