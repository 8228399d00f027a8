//! Integration tests: deploy (being written).
