//! sealpush: a content-addressed artifact packager and pusher.
//!
//! The library is a small pure core (recipe ordering, xargs/sha256sum emulation, manifest
//! encoding, archive layout, plan checks) with I/O at the edges (local walks, the store, remote
//! hosts). It never prints: commands in the binary turn its values into output.

pub mod deploy;
pub mod digest;
pub mod interrupt;
pub mod manifest;
pub mod mountinfo;
pub mod pack;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod remote;
pub mod sha256_many;
pub mod stamp;
pub mod store;
pub mod tree;

/// The version recorded in manifests, plans and receipts.
pub const TOOL_VERSION: &str = concat!("sealpush ", env!("CARGO_PKG_VERSION"));
