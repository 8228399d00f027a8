//! A zstd streaming compressor over libzstd's own API, for the one parameter the `zstd` crate
//! cannot set: the pre-block splitter.
//!
//! libzstd 1.5.7 added a pre-splitter that, at the fast levels, looks for a place to cut each
//! 128 KiB block before compressing it. At level 3 it costs about 10% of the compression time
//! (2.05 against 2.25 CPU-s for the 950 MB tar stream of the `small` corpus) for 0.2% smaller
//! output. sealpush turns it off, which is what zstd did at every level before 1.5.7 (the
//! Debian 12 `zstd` CLI, 1.5.4, that `benches/pack.sh` compares against, has no such stage).
//! It also pins the parameter: a later libzstd that changed its default splitting would
//! otherwise change the archive's bytes.
//!
//! The `zstd` crate's safe layer (`zstd-safe`) maps only the experimental parameters it knows,
//! and hides its context's pointer, so this module drives the context through `zstd-sys`,
//! which that crate re-exports. The unsafe code is the few calls below, each on a context
//! this type owns.

use std::io::{self, Write};
use std::ptr::NonNull;

use zstd::zstd_safe::zstd_sys as sys;

/// `ZSTD_c_blockSplitterLevel` (`ZSTD_c_experimentalParam20`, zstd 1.5.7) at 1: no
/// pre-splitting.
const NO_PRE_SPLITTING: i32 = 1;

/// Compressed bytes are handed to the inner writer in pieces of at most this size.
const OUT_CHUNK: usize = 1 << 20;

/// Writes one zstd frame: level `level`, `workers` worker threads (at least 1: the bytes are
/// the same for every count from 1 up, see `store-layout.md`), frame checksum on, content size
/// not written, no pre-splitting of blocks. [`ZstdWriter::finish`] ends the frame.
pub struct ZstdWriter<W: Write> {
    cctx: Context,
    inner: W,
    out: Vec<u8>,
}

/// An owned compression context, freed on drop.
struct Context(NonNull<sys::ZSTD_CCtx>);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createCCtx in `ZstdWriter::new`, freed only here.
        unsafe {
            sys::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

fn check(code: usize) -> io::Result<usize> {
    // SAFETY: both functions only inspect the code (ZSTD_getErrorName returns a static string).
    unsafe {
        if sys::ZSTD_isError(code) != 0 {
            let name = std::ffi::CStr::from_ptr(sys::ZSTD_getErrorName(code));
            return Err(io::Error::other(format!(
                "zstd: {}",
                name.to_string_lossy()
            )));
        }
    }
    Ok(code)
}

impl<W: Write> ZstdWriter<W> {
    pub fn new(inner: W, level: i32, workers: u32) -> io::Result<ZstdWriter<W>> {
        // SAFETY: a fresh context or null (out of memory), owned from here on and freed in Drop.
        let cctx = NonNull::new(unsafe { sys::ZSTD_createCCtx() })
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a compression context"))?;
        let w = ZstdWriter {
            cctx: Context(cctx),
            inner,
            out: vec![0; OUT_CHUNK],
        };
        use sys::ZSTD_cParameter as P;
        let set = |param: P, value: i32| {
            // SAFETY: the context is valid; zstd checks the parameter and value.
            check(unsafe { sys::ZSTD_CCtx_setParameter(w.cctx.0.as_ptr(), param, value) })
        };
        set(P::ZSTD_c_compressionLevel, level)?;
        set(P::ZSTD_c_nbWorkers, workers.max(1) as i32)?;
        set(P::ZSTD_c_checksumFlag, 1)?;
        set(P::ZSTD_c_contentSizeFlag, 0)?;
        // zstd.h names it ZSTD_c_blockSplitterLevel. A libzstd older than 1.5.7 (a build
        // against the system's, say) rejects it, and has no pre-splitter to turn off.
        let _ = set(P::ZSTD_c_experimentalParam20, NO_PRE_SPLITTING);
        Ok(w)
    }

    /// One compressStream2 call; returns (input consumed, zstd's hint: 0 when a flush or the
    /// frame end is complete).
    fn step(&mut self, input: &[u8], end: sys::ZSTD_EndDirective) -> io::Result<(usize, usize)> {
        let mut inb = sys::ZSTD_inBuffer {
            src: input.as_ptr().cast(),
            size: input.len(),
            pos: 0,
        };
        let mut outb = sys::ZSTD_outBuffer {
            dst: self.out.as_mut_ptr().cast(),
            size: self.out.len(),
            pos: 0,
        };
        // SAFETY: the context is valid; both buffers point into live slices of the given sizes,
        // and zstd keeps no pointer to them past the call (stable-buffer modes are off).
        let hint = check(unsafe {
            sys::ZSTD_compressStream2(self.cctx.0.as_ptr(), &mut outb, &mut inb, end)
        })?;
        self.inner.write_all(&self.out[..outb.pos])?;
        Ok((inb.pos, hint))
    }

    /// Ends the frame and returns the inner writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        while self.step(&[], sys::ZSTD_EndDirective::ZSTD_e_end)?.1 != 0 {}
        Ok(self.inner)
    }
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // zstd may take nothing while its output is full: call until it takes something.
        loop {
            let (taken, _) = self.step(data, sys::ZSTD_EndDirective::ZSTD_e_continue)?;
            if taken > 0 {
                return Ok(taken);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.step(&[], sys::ZSTD_EndDirective::ZSTD_e_flush)?.1 != 0 {}
        self.inner.flush()
    }
}
