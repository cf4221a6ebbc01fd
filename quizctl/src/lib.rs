//! quizctl
