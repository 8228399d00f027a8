//! Integration tests: pack (being written).
