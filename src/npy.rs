//! NumPy `.npy` (format 1.0) for float32 arrays: what the parity tools write and the tests read.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    // magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
    f.write_all(&(header.len() as u16).to_le_bytes()).map_err(io)?;
    f.write_all(header.as_bytes()).map_err(io)?;
    for x in data {
        f.write_all(&x.to_le_bytes()).map_err(io)?;
    }
    f.flush().map_err(io)
}

/// Read a little-endian float32 C-order `.npy`: (shape, data).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let b = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let bad = |m: &str| Error::Invalid(format!("{}: {m}", path.display()));
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header =
        std::str::from_utf8(b.get(10..10 + hlen).ok_or_else(|| bad("truncated header"))?).map_err(|_| bad("header"))?;
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("only little-endian float32 C-order arrays are read"));
    }
    let s = header.split("'shape': (").nth(1).and_then(|r| r.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = s
        .split(',')
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_err(|_| bad("shape")))
        .collect::<Result<_>>()?;
    let data: Vec<f32> = b[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad("data length does not match the shape"));
    }
    Ok((shape, data))
}
