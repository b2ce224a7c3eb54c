//! Read-only memory maps: whole GGUF files for the runtime, safetensors checkpoints for the converter.
//!
//! Safety contract: a mapped file must not be truncated or written while mapped (the same contract as
//! llama.cpp and every mmap-based loader). We open files read-only and never write through the map; a file
//! changed underneath us by another process is outside what we can defend against.

use std::fs::File;

pub struct Map {
    map: Option<memmap2::Mmap>, // None for an empty file, which cannot be mapped
}

impl Map {
    pub fn new(file: &File) -> std::io::Result<Map> {
        if file.metadata()?.len() == 0 {
            return Ok(Map { map: None });
        }
        // SAFETY: see the module contract.
        let map = unsafe { memmap2::Mmap::map(file)? };
        Ok(Map { map: Some(map) })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Drop this process's pages of `start..start + len` (whole pages inside it): resident memory falls, the page
    /// cache keeps them, and a later read maps them again from the file. For bytes read once (a loader that
    /// copied them elsewhere).
    pub fn release(&self, start: usize, len: usize) {
        let Some(m) = &self.map else { return };
        let page = 4096;
        let (a, b) = (start.div_ceil(page) * page, ((start + len) / page * page).min(m.len()));
        if a < b {
            // SAFETY: a read-only shared file map: dropped pages read back the file's bytes (module contract).
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
        }
    }
}
