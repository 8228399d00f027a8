//! Progress reporting. The library reports through [`Progress`]; the binary chooses an
//! implementation: [`NoProgress`] for tests, benches, pipes and `-q`, [`Bars`] (indicatif) when
//! stderr is a terminal.

use std::sync::Mutex;
use std::time::Duration;

/// Receives progress from long operations. Every method has a no-op default, and the trait is
/// `Sync` so rayon workers and async tasks can report concurrently.
pub trait Progress: Sync {
    /// A new phase begins ("hashing", "uploading"). Totals are known or `None`.
    fn start(&self, _phase: &str, _total_bytes: Option<u64>, _total_items: Option<u64>) {}
    /// `bytes` more bytes and `items` more items are done in the current phase.
    fn advance(&self, _bytes: u64, _items: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// indicatif bars on stderr, one phase at a time.
pub struct Bars {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    /// true when the current bar counts bytes, false when it counts items.
    bytes_mode: Mutex<bool>,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            bar: Mutex::new(None),
            bytes_mode: Mutex::new(true),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Progress for Bars {
    fn start(&self, phase: &str, total_bytes: Option<u64>, total_items: Option<u64>) {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let (len, template) = match (total_bytes, total_items) {
            (Some(b), _) => (
                Some(b),
                "{prefix:>12.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ),
            (None, Some(n)) => (Some(n), "{prefix:>12.bold} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}"),
            (None, None) => (None, "{prefix:>12.bold} {spinner} {bytes} {binary_bytes_per_sec}"),
        };
        let bar = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(phase.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.replace(bar) {
            old.finish_and_clear();
        }
        *self.bytes_mode.lock().unwrap_or_else(|e| e.into_inner()) =
            total_bytes.is_some() || total_items.is_none();
    }

    fn advance(&self, bytes: u64, items: u64) {
        let bytes_mode = *self.bytes_mode.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.inc(if bytes_mode { bytes } else { items });
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}
