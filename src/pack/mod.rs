//! Reproducible archives and checked extraction.
//!
//! [`pack_dir`] turns a tree into a tar.zst or tar.gz whose bytes depend only on the tree's
//! content (see `store-layout.md`, "Archive normalisation"): the same tree gives the same bytes
//! whatever the run, thread count, umask, timestamps, owners, creation order or machine.
//! [`unpack`] and [`read_checked`] read any tar.zst/tar.gz (not only ours) and check every entry
//! against the rules in [`check`] before acting on it; nothing escapes the destination.

pub mod check;
mod fsat;
pub mod layout;
mod unpack;
pub(crate) use unpack::rename_noreplace;
mod write;
mod zstd_writer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use check::{CheckedEntry, CheckedKind};
pub use unpack::{
    derive_manifest, read_checked, read_checked_streaming, unpack, unpack_artifact, unpack_opened,
    unpack_unhashed, ArchiveRead, UnpackError,
};
pub use write::{pack_dir, pack_to_file, PackError, Packed};

/// The fixed mtime of every entry when `SOURCE_DATE_EPOCH` is not set: 2006-07-24T01:21:28Z.
/// Not 0 because some tools treat a zero mtime as "unset" and substitute the current time
/// (rust-lang/cargo#9512); this is the value tar-rs's deterministic mode uses, for the same
/// reason.
pub const DEFAULT_MTIME: u64 = 1153704088;

/// The largest mtime a ustar header holds: 11 octal digits, 2242-03-16T12:56:31Z. sealpush
/// writes no PAX time records, so a later one would be clamped in the archive while the
/// artifact's id and meta.json record the value given: refused instead.
pub const MAX_MTIME: u64 = 0o77777777777;

/// zstd level used when none is given (the zstd CLI's default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// gzip level used when none is given (the gzip CLI's default).
pub const DEFAULT_GZIP_LEVEL: i32 = 6;

/// Archive format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Format {
    #[serde(rename = "tar.zst")]
    TarZst,
    #[serde(rename = "tar.gz")]
    TarGz,
}

impl Format {
    /// File name extension, without the leading dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::TarZst => "tar.zst",
            Format::TarGz => "tar.gz",
        }
    }

    /// The compression levels a pack accepts: zstd's 1 to 22 (`zstd --ultra -22`), deflate's 0
    /// (stored, not compressed) to 9.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Format::TarZst => 1..=22,
            Format::TarGz => 0..=9,
        }
    }

    pub fn default_level(self) -> i32 {
        match self {
            Format::TarZst => DEFAULT_ZSTD_LEVEL,
            Format::TarGz => DEFAULT_GZIP_LEVEL,
        }
    }

    /// Recognises a compressed stream by its magic bytes.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Format::TarZst)
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Some(Format::TarGz)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "tar.zst" | "zst" | "zstd" => Ok(Format::TarZst),
            "tar.gz" | "gz" | "gzip" => Ok(Format::TarGz),
            _ => Err(format!("unknown format {s:?}: expected tar.zst or tar.gz")),
        }
    }
}

/// How to pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    pub format: Format,
    /// zstd 1..=22 or gzip 0..=9.
    pub level: i32,
    /// Compression threads: zstd workers (always at least 1: zstd's output is the same for every
    /// worker count >= 1 but differs with 0), or gzip pieces compressed at once. `None`: all
    /// cores. Does not change the bytes.
    pub threads: Option<usize>,
    /// mtime of every entry, seconds since the epoch.
    pub mtime: u64,
}

impl PackOptions {
    /// Defaults for `format`: its CLI's default level, all cores, [`PackOptions::mtime_from_env`].
    pub fn new(format: Format) -> PackOptions {
        PackOptions {
            format,
            level: format.default_level(),
            threads: None,
            mtime: PackOptions::mtime_from_env(),
        }
    }

    /// `SOURCE_DATE_EPOCH` when set to a non-negative integer, else [`DEFAULT_MTIME`].
    pub fn mtime_from_env() -> u64 {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_MTIME)
    }

    /// Checks the level against the format's range, and the mtime against [`MAX_MTIME`].
    pub fn validate(&self) -> Result<(), PackError> {
        if self.mtime > MAX_MTIME {
            return Err(PackError::Mtime { mtime: self.mtime });
        }
        if self.format.levels().contains(&self.level) {
            Ok(())
        } else {
            Err(PackError::Level {
                format: self.format,
                level: self.level,
            })
        }
    }
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions::new(Format::TarZst)
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PackError {
    let path = path.into();
    move |source| PackError::Io { path, source }
}
