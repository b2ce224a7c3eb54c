//! Read-only memory maps of checkpoint files, used for their headers only.
//!
//! Safety contract: the mapped file must not be truncated while mapped; we open it read-only and drop
//! the map as soon as the header is parsed.

use std::fs::File;

pub(crate) struct Map(Option<memmap2::Mmap>);

impl Map {
    pub fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

pub(crate) fn map(file: &File) -> std::io::Result<Map> {
    if file.metadata()?.len() == 0 {
        return Ok(Map(None));
    }
    // SAFETY: see the module contract.
    Ok(Map(Some(unsafe { memmap2::Mmap::map(file)? })))
}
