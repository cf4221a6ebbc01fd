//! Fault scenarios against a multi-process cluster; see `chaos/README.md`. Not built yet.
