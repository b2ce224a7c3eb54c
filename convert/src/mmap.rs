//! Read-only memory maps: checkpoint headers here, whole GGUF files for the runtime (`pixtral::mmap`).
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
}
