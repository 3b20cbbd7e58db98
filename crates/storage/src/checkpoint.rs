//! Small checkpoint files, written so that a crash leaves either the old or the new content:
//! write a temp file, fsync it, rename it over the old one, fsync the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Atomically replaces `dir/name` with `contents`; durable when it returns.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).ctx("create", &tmp)?;
    file.write_all(contents).ctx("write", &tmp)?;
    file.sync_all().ctx("fsync", &tmp)?;
    fs::rename(&tmp, &path).ctx("rename", &path)?;
    sync_dir(dir)
}

/// fsyncs a directory, making creations, renames and deletions in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Reads `dir/name` as one integer; `None` when the file is missing or does not parse
/// (a damaged checkpoint only costs a longer recovery, never data).
pub fn read_i64(dir: &Path, name: &str) -> Option<i64> {
    let text = fs::read_to_string(dir.join(name)).ok()?;
    text.trim().parse().ok()
}
