//! Integration tests: remote (being written).
