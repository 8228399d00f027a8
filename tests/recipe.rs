//! Integration tests: recipe (being written).
