//! Read-only memory maps (shared with the converter; see its safety contract).

pub use pixtral_convert::mmap::Map;
