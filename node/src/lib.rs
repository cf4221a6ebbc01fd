//! quiz-node
