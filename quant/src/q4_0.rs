//! Q4_0: 32 weights; f16 scale `d`, then 16 bytes: low nibble = element j, high nibble = element j+16;
//! w = (q − 8) · d. 18 bytes.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl BlockQ4_0 {
    pub const BYTES: usize = 18;

    /// ggml `quantize_row_q4_0_ref` as `gguf.quants.Q4_0` computes it: `d = max / -8` where `max` is the
    /// signed value of largest magnitude (first one on ties), `id = 1/d`, `q = min(15, trunc(x·id + 8.5))`,
    /// all in f32.
    pub fn quantize_ref(x: &[f32; 32]) -> BlockQ4_0 {
        // numpy argmax of |x|: the first index wins ties, so start from x[0] (this keeps the sign of -0.0)
        let mut amax = x[0].abs();
        let mut max = x[0];
        for v in &x[1..] {
            if v.abs() > amax {
                amax = v.abs();
                max = *v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5).trunc() as u8).min(15);
            let q1 = ((x[j + 16] * id + 8.5).trunc() as u8).min(15);
            qs[j] = q0 | (q1 << 4);
        }
        BlockQ4_0 { d: f16::from_f32(d), qs }
    }

    pub fn dequantize_ref(&self, out: &mut [f32; 32]) {
        let d = self.d.to_f32();
        for j in 0..16 {
            out[j] = ((self.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            out[j + 16] = ((self.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }

    /// Parse from exactly 18 little-endian bytes.
    pub fn read_from(b: &[u8]) -> BlockQ4_0 {
        debug_assert_eq!(b.len(), Self::BYTES);
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[2..18]);
        BlockQ4_0 { d: f16::from_bits(u16::from_le_bytes([b[0], b[1]])), qs }
    }

    pub fn write_to(&self, b: &mut [u8]) {
        debug_assert_eq!(b.len(), Self::BYTES);
        b[0..2].copy_from_slice(&self.d.to_bits().to_le_bytes());
        b[2..18].copy_from_slice(&self.qs);
    }
}
