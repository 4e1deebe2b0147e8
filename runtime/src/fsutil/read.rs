//! Bounded reads (only regular files, up to a size) and file hashes.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The SHA-256 of a file, hex, read in blocks (never the whole file at once).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

// ─── bounded reads ────────────────────────────────────────────────────────────────────────────────

/// The largest script, config, JSON or tokenizer file vidtune reads (far above any real one).
pub const TEXT_MAX_BYTES: u64 = 64 << 20;

/// Checks that `path` is a regular file (not a FIFO, device, socket or folder) of at most `max` bytes,
/// before anything reads it. `what` names the file in errors ("script", "config").
pub fn check_readable(path: &Path, max: u64, what: &str) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::bad_file(path, format!("is a folder, expected a {what} file")));
    }
    if !meta.is_file() {
        return Err(Error::bad_file(
            path,
            format!("is not a regular file (a pipe, device or socket); vidtune reads a {what} only from a file"),
        ));
    }
    if meta.len() > max {
        return Err(Error::bad_file(
            path,
            format!("has {} bytes, more than the {} a {what} may have", meta.len(), human_bytes(max)),
        ));
    }
    Ok(meta)
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Reads a regular file of at most `max` bytes ([`check_readable`]); a file that grows while it is read
/// is cut at the limit and refused.
pub fn read_limited(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    check_readable(path, max, what)?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::bad_file(path, format!("grew past the {} a {what} may have", human_bytes(max))));
    }
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text, up to [`TEXT_MAX_BYTES`].
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    utf8(read_limited(path, TEXT_MAX_BYTES, what)?, path, what)
}

/// Text from a stream (a piped script, named `path` in errors), up to [`TEXT_MAX_BYTES`].
pub fn read_text_from(reader: impl Read, path: &Path, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    reader.take(TEXT_MAX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > TEXT_MAX_BYTES {
        return Err(Error::bad_file(
            path,
            format!("is longer than the {} a {what} may have", human_bytes(TEXT_MAX_BYTES)),
        ));
    }
    utf8(bytes, path, what)
}

fn utf8(bytes: Vec<u8>, path: &Path, what: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        Error::bad_file(
            path,
            format!("is not UTF-8 text (byte {} is not), so it is not a {what}", e.utf8_error().valid_up_to()),
        )
    })
}
