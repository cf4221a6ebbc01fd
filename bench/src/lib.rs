//! The capacity planner's load tool; see `bench/README.md`. Not built yet.
