//! The formats of community GGUFs beyond Q4_0/Q8_0: the K-quants (Q2_K … Q6_K, 256 weights per super-block with
//! 6-bit or 8-bit sub-block scales), IQ4_XS (a K-sized block of the IQ4_NL non-linear grid), and the legacy 32-weight
//! formats Q4_1, Q5_0, Q5_1 and IQ4_NL; with Q8_K, the activation format of the K-quants and IQ4_XS.
//!
//! Layouts and decoding follow ggml (`ggml-common.h`, `dequantize_row_*` in `ggml-quants.c`) and are checked bit
//! for bit against the `gguf` Python package (`gguf.quants.dequantize`), whose float operations they copy in
//! order: `(d · sc) · q − (dmin · m)`, each product rounded to f32, no fused multiply-add.
//!
//! Every block is read through one function, [`unpack`]: its weights as small integers `q` (offsets applied, so
//! `w = d·sc_j·q − dmin·m_j` for sub-block `j`) and its integer sub-block scales and mins. Decoding and the scalar
//! dot products (the twins the SIMD kernels are tested against) are then one loop each for all ten types, the
//! dot in ggml's arrangement: an exact integer sum per block, `Σ_j sc_j · Σ_i q_i·y_i` and `Σ_j m_j · Σ_i y_i`
//! (the latter from Q8_K's `bsums`), turned to float once per block.

use half::f16;

use crate::{BlockQ8_0, GgmlType};

/// Weights per K super-block.
pub const QK_K: usize = 256;

/// Q8_K: 256 activations; f32 scale `d`, 256 × i8 and the sums of each 16 (`bsums`). ggml's `block_q8_K`
/// (292 bytes in a file; here a plain struct, it never leaves memory).
#[allow(non_camel_case_types)] // ggml's name
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8_K {
    fn default() -> Self {
        BlockQ8_K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }
    }
}

/// ggml `quantize_row_q8_K_ref`: the signed value of largest magnitude `max` maps to −127 (`iscale = −127/max`),
/// `q = min(127, round_half_even(iscale·x))`, `d = 1/iscale`; a block of zeros gets `d = 0`. Equal to ggml's to the
/// bit (its `nearest_int` rounds half to even).
pub fn quantize_row_q8_k_ref(x: &[f32], out: &mut [BlockQ8_K]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (x, o) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *o = BlockQ8_K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in o.qs.iter_mut().zip(x) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (s, q) in o.bsums.iter_mut().zip(o.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        o.d = 1.0 / iscale;
    }
}

/// Σ qs·d of a Q8_1 block, rounded to f16 as ggml stores it (`quantize_row_q8_1_ref`: `s = fp16(Σq · d)` with the
/// f32 `d = amax/127`, before `d` itself is rounded). Q8_1's `qs` and `d` are Q8_0's, so Q4_1/Q5_1 activations are
/// Q8_0 blocks plus this.
pub fn q8_1_sum(x: &[f32; 32], qs: &[i8; 32]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
    f16::from_f32(sum as f32 * (amax / 127.0)).to_f32()
}

/// One block as integers: weight `i` of sub-block `j = i / sub` is `(d·sc[j])·q[i] − (dmin·m[j])`.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// weights per block: 32 (legacy) or 256 (K)
    pub n: usize,
    /// weights per sub-block scale: 16 or 32 (the whole block for the legacy types)
    pub sub: usize,
    pub q: [i8; QK_K],
    pub sc: [i32; 16],
    pub m: [i32; 16],
    pub d: f32,
    /// `None`: no minimum term (symmetric types)
    pub dmin: Option<f32>,
}

impl Unpacked {
    /// A K block's scales (and mins, `with_min`) from [`KScales`], per sub-block of `sub` weights (KScales holds
    /// them per 16: a 32-weight sub-block is every other entry).
    fn set_scales(&mut self, k: &KScales, sub: usize, with_min: bool) {
        self.sub = sub;
        for j in 0..QK_K / sub {
            (self.sc[j], self.m[j]) = (k.sc[j * sub / 16] as i32, k.mn[j * sub / 16] as i32);
        }
        self.d = k.d;
        self.dmin = with_min.then_some(k.dmin);
    }
}

/// The IQ4_NL / IQ4_XS grid (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_K/Q5_K's packed 6-bit scale and min of sub-block `j` (ggml `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (i32, i32) {
    if j < 4 {
        ((s[j] & 63) as i32, (s[j + 4] & 63) as i32)
    } else {
        (((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4)) as i32, ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as i32)
    }
}

/// One K super-block's scales as the SIMD kernels use them: 16 sub-block scales `sc` and mins `mn` (Q4_K/Q5_K's
/// eight per-32 values doubled), the weights' offset `off` (`q = u − off` for the unsigned bytes `u` the kernels
/// unpack: Q3_K 4, Q6_K 32, else 0), `d` and `dmin` (0 for the types without mins). Scalar: 16 values per 256
/// weights, shared by every tier.
#[derive(Debug, Clone, Copy)]
pub struct KScales {
    pub sc: [i16; 16],
    pub mn: [i16; 16],
    pub off: i16,
    pub d: f32,
    pub dmin: f32,
}

impl KScales {
    /// From one block of `ty` (Q2_K … Q6_K).
    pub fn read(ty: GgmlType, b: &[u8]) -> KScales {
        let mut s = KScales { sc: [0; 16], mn: [0; 16], off: 0, d: 0.0, dmin: 0.0 };
        match ty {
            GgmlType::Q2_K => {
                for (j, &v) in b[..16].iter().enumerate() {
                    (s.sc[j], s.mn[j]) = ((v & 0xF) as i16, (v >> 4) as i16);
                }
                (s.d, s.dmin) = (f16_at(b, 80), f16_at(b, 82));
            }
            GgmlType::Q3_K => {
                for j in 0..16 {
                    let lo = (b[96 + j % 8] >> (4 * (j / 8))) & 0xF;
                    let hi = (b[104 + j % 4] >> (2 * (j / 4))) & 3;
                    s.sc[j] = (lo | hi << 4) as i16 - 32;
                }
                (s.off, s.d) = (4, f16_at(b, 108));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &b[4..16]);
                    (s.sc[2 * j], s.sc[2 * j + 1], s.mn[2 * j], s.mn[2 * j + 1]) =
                        (sc as i16, sc as i16, m as i16, m as i16);
                }
                (s.d, s.dmin) = (f16_at(b, 0), f16_at(b, 2));
            }
            GgmlType::Q6_K => {
                for (j, &v) in b[192..208].iter().enumerate() {
                    s.sc[j] = v as i8 as i16;
                }
                (s.off, s.d) = (32, f16_at(b, 208));
            }
            other => unreachable!("{other} is not a K type"),
        }
        s
    }
}

/// The types of this module (the ones [`unpack`] reads).
pub fn is_unpacked_type(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_1 | Q5_0 | Q5_1 | IQ4_NL | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS)
}

/// Block `b` (exactly `ty.type_size()` bytes) of one of this module's types as integers.
#[allow(clippy::needless_range_loop)] // index loops read as ggml's layout comments do
pub fn unpack(ty: GgmlType, b: &[u8]) -> Unpacked {
    debug_assert_eq!(b.len(), ty.type_size());
    let mut u = Unpacked { n: QK_K, sub: 16, q: [0; QK_K], sc: [0; 16], m: [0; 16], d: 0.0, dmin: None };
    match ty {
        // ---- legacy, 32 weights: d (f16) [, m (f16)] [, qh (u32)], qs[16]: weight l in the low nibble of qs[l],
        // weight l + 16 in the high nibble; Q5's fifth bit of weight l is bit l of qh
        GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::IQ4_NL => {
            (u.n, u.sub, u.sc[0], u.d) = (32, 32, 1, f16_at(b, 0));
            let (qh, qs) = match ty {
                GgmlType::Q4_1 => (0, &b[4..20]),
                GgmlType::Q5_0 => (u32::from_le_bytes([b[2], b[3], b[4], b[5]]), &b[6..22]),
                GgmlType::Q5_1 => (u32::from_le_bytes([b[4], b[5], b[6], b[7]]), &b[8..24]),
                _ => (0, &b[2..18]),
            };
            for l in 0..32 {
                let nib = (qs[l % 16] >> (4 * (l / 16))) & 0xF;
                let hi = ((qh >> l) & 1) as u8;
                u.q[l] = match ty {
                    GgmlType::Q4_1 => nib as i8,
                    GgmlType::Q5_0 => (nib | hi << 4) as i8 - 16,
                    GgmlType::Q5_1 => (nib | hi << 4) as i8,
                    _ => KVALUES_IQ4NL[nib as usize],
                };
            }
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                // w = d·q + m: a minimum term with dmin = −m and scale 1
                (u.m[0], u.dmin) = (1, Some(-f16_at(b, 2)));
            }
        }
        // ---- Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Weight i: half h = i/128,
        // shift s = (i%128)/32, l = i%32 → (qs[32h + l] >> 2s) & 3
        GgmlType::Q2_K => {
            u.set_scales(&KScales::read(ty, b), 16, true);
            for i in 0..QK_K {
                let (h, s, l) = (i / 128, (i % 128) / 32, i % 32);
                u.q[i] = ((b[16 + 32 * h + l] >> (2 * s)) & 3) as i8;
            }
        }
        // ---- Q3_K: hmask[32], qs[64], scales[12] (16 six-bit scales, offset 32), d. Weight i: two low bits as
        // Q2_K's, minus 4 unless bit i/32 of hmask[i%32] is set
        GgmlType::Q3_K => {
            let (hm, qs) = (&b[0..32], &b[32..96]);
            u.set_scales(&KScales::read(ty, b), 16, false);
            for i in 0..QK_K {
                let (h, sh, l) = (i / 128, (i % 128) / 32, i % 32);
                let low = ((qs[32 * h + l] >> (2 * sh)) & 3) as i8;
                let high = (hm[l] >> (i / 32)) & 1;
                u.q[i] = low - if high == 0 { 4 } else { 0 };
            }
        }
        // ---- Q4_K / Q5_K: d, dmin, scales[12] (8 six-bit scales and mins), [qh[32],] qs[128]. Sub-block j of 32:
        // chunk c = j/2 of 32 bytes, low nibbles for even j, high for odd; Q5_K's fifth bit of weight i is bit
        // i/32 of qh[i%32]
        GgmlType::Q4_K | GgmlType::Q5_K => {
            u.set_scales(&KScales::read(ty, b), 32, true);
            let (qh, qs) = if ty == GgmlType::Q5_K { (&b[16..48], &b[48..176]) } else { (&[0u8; 32][..], &b[16..144]) };
            for i in 0..QK_K {
                let (j, l) = (i / 32, i % 32);
                let nib = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
                u.q[i] = (nib | ((qh[l] >> j) & 1) << 4) as i8;
            }
        }
        // ---- Q6_K: ql[128], qh[64], scales[16] (i8), d. Weight i: half h = i/128; low nibble (ql[64h + i%64] >>
        // 4·((i%128)/64)) & 0xF, high two bits (qh[32h + i%32] >> 2·((i%128)/32)) & 3; minus 32
        GgmlType::Q6_K => {
            let (ql, qh) = (&b[0..128], &b[128..192]);
            u.set_scales(&KScales::read(ty, b), 16, false);
            for i in 0..QK_K {
                let (h, r) = (i / 128, i % 128);
                let lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF;
                let hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
                u.q[i] = (lo | hi << 4) as i8 - 32;
            }
        }
        // ---- IQ4_XS: d, scales_h (u16: two high bits per sub-block), scales_l[4] (nibbles), qs[128]. Sub-block j
        // of 32: bytes 16j..16j+16, low nibbles then high nibbles, through the IQ4_NL grid; scale offset 32
        GgmlType::IQ4_XS => {
            (u.sub, u.d) = (32, f16_at(b, 0));
            let sh = u16::from_le_bytes([b[2], b[3]]);
            for j in 0..8 {
                let lo = (b[4 + j / 2] >> (4 * (j % 2))) & 0xF;
                let hi = ((sh >> (2 * j)) & 3) as u8;
                u.sc[j] = (lo | hi << 4) as i32 - 32;
            }
            let qs = &b[8..136];
            for i in 0..QK_K {
                let (j, l) = (i / 32, i % 32);
                u.q[i] = KVALUES_IQ4NL[((qs[16 * j + l % 16] >> (4 * (l / 16))) & 0xF) as usize];
            }
        }
        other => unreachable!("{other} is not a type of this module"),
    }
    u
}

/// Decode one block into `out` (`u.n` values): `(d·sc_j)·q − (dmin·m_j)`, the `gguf` package's order of f32
/// operations (the legacy Q4_1/Q5_1 `d·q + m` is the same with `sc = 1`, `dmin·m = −m`).
pub fn dequantize_block(u: &Unpacked, out: &mut [f32]) {
    for (j, o) in out[..u.n].chunks_exact_mut(u.sub).enumerate() {
        let dl = u.d * u.sc[j] as f32;
        let q = &u.q[j * u.sub..];
        match u.dmin {
            Some(dmin) => {
                let ml = dmin * u.m[j] as f32;
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = dl * q as f32 - ml;
                }
            }
            None => {
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = dl * q as f32;
                }
            }
        }
    }
}

/// Decode a row of `ty` (whole blocks) into `out`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    let bs = ty.block_size();
    for (b, o) in src.chunks_exact(ty.type_size()).zip(out.chunks_exact_mut(bs)) {
        dequantize_block(&unpack(ty, b), o);
    }
}

/// The scalar twin of a K-quant / IQ4_XS row · Q8_K activations: per super-block the exact integers
/// `sumi = Σ_j sc_j · Σ_{i∈j} q_i·y_i` and `summ = Σ_j m_j · Σ_{i∈j} y_i`, then
/// `acc += (d·y.d)·sumi − (dmin·y.d)·summ` (ggml's `ggml_vec_dot_*_q8_K`, up to the order of float additions).
pub fn dot_q8_k_ref(ty: GgmlType, w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let mut acc = 0f32;
    for (b, y) in w.chunks_exact(ty.type_size()).zip(y) {
        let u = unpack(ty, b);
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..QK_K / u.sub {
            let r = j * u.sub..(j + 1) * u.sub;
            let dot: i32 = u.q[r.clone()].iter().zip(&y.qs[r]).map(|(&q, &a)| q as i32 * a as i32).sum();
            sumi += u.sc[j] * dot;
            if u.dmin.is_some() {
                let per = u.sub / 16;
                let ysum: i32 = y.bsums[j * per..(j + 1) * per].iter().map(|&s| s as i32).sum();
                summ += u.m[j] * ysum;
            }
        }
        acc += (u.d * y.d) * sumi as f32;
        if let Some(dmin) = u.dmin {
            acc -= (dmin * y.d) * summ as f32;
        }
    }
    acc
}

/// The scalar twin of a Q5_0 / IQ4_NL row · Q8_0 activations (`sumi·(dx·dy)` per block), and of a Q4_1 / Q5_1
/// row · Q8_1 activations (`ys`: each block's [`q8_1_sum`]; then `+ m·s` per block), as ggml's
/// `ggml_vec_dot_q4_1_q8_1` etc.
pub fn dot_q8_legacy_ref(ty: GgmlType, w: &[u8], y: &[BlockQ8_0], ys: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (i, (b, y)) in w.chunks_exact(ty.type_size()).zip(y).enumerate() {
        let u = unpack(ty, b);
        let sumi: i32 = u.q[..32].iter().zip(&y.qs).map(|(&q, &a)| q as i32 * a as i32).sum();
        acc += sumi as f32 * (u.d * y.d.to_f32());
        if let Some(dmin) = u.dmin {
            acc += -dmin * ys[i]; // dmin = −m
        }
    }
    acc
}

// ---- reference quantizers of the legacy types (ggml `quantize_row_q4_1_ref` etc., the `gguf` package's) ----

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// Q4_1 / Q5_1 / Q5_0 of one block of 32 into `dst` (`ty.type_size()` bytes). Q4_1/Q5_1: `d = (max − min)/15|31`,
/// `q = trunc((x − min)/d + ½)` clipped; Q5_0: the signed peak `max` maps to −16, `d = max/−16`,
/// `q = trunc(x/d + 16.5)` clipped to 31.
pub fn quantize_block_legacy(ty: GgmlType, x: &[f32; 32], dst: &mut [u8]) {
    let (min, max) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let mut q = [0u8; 32];
    let (levels, off, d, base) = match ty {
        GgmlType::Q5_0 => {
            // the first value of largest magnitude (numpy's argmax): its sign is d's, −0.0 included
            let peak = x.iter().fold(x[0], |p, &v| if v.abs() > p.abs() { v } else { p });
            (31u8, 16.5f32, peak / -16.0, 0f32)
        }
        GgmlType::Q4_1 => (15, 0.5, (max - min) / 15.0, min),
        GgmlType::Q5_1 => (31, 0.5, (max - min) / 31.0, min),
        other => unreachable!("{other} has no legacy quantizer"),
    };
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        // numpy's float → uint8 cast of the (non-negative) truncated value, then clip
        *q = (((v - base) * id + off).trunc() as u8).min(levels);
    }
    put_f16(dst, 0, d);
    let mut at = 2;
    if ty != GgmlType::Q5_0 {
        put_f16(dst, 2, min);
        at = 4;
    }
    if ty != GgmlType::Q4_1 {
        let qh = q.iter().enumerate().fold(0u32, |h, (l, &q)| h | (((q >> 4) & 1) as u32) << l);
        dst[at..at + 4].copy_from_slice(&qh.to_le_bytes());
        at += 4;
    }
    for l in 0..16 {
        dst[at + l] = (q[l] & 0xF) | (q[l + 16] & 0xF) << 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_k_maps_the_signed_peak_to_minus_127_and_sums_each_16() {
        let mut x = [0f32; QK_K];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 100.0) * 0.01;
        }
        x[7] = 3.0; // the peak: q = −127
        let mut b = [BlockQ8_K::default()];
        quantize_row_q8_k_ref(&x, &mut b);
        assert_eq!(b[0].qs[7], -127);
        assert!((b[0].d - 3.0 / -127.0).abs() < 1e-9);
        for (j, s) in b[0].bsums.iter().enumerate() {
            assert_eq!(*s as i32, b[0].qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum::<i32>());
        }
        // half-way values round to even (ggml's nearest_int): with the peak −127, iscale = 1
        let mut y = [0f32; QK_K];
        y[0] = -127.0; // iscale = 1
        y[1] = 2.5;
        y[2] = 3.5;
        quantize_row_q8_k_ref(&y, &mut b);
        assert_eq!((b[0].qs[0], b[0].qs[1], b[0].qs[2]), (-127, 2, 4));
    }

    #[test]
    fn dot_twins_equal_the_dot_of_the_decoded_rows() {
        // every type: random bytes with sane f16 scales, decoded, dotted in f64 with the decoded activations
        let mut rng = crate::selftest::Rng(7);
        for ty in GgmlType::all().filter(|t| is_unpacked_type(*t)) {
            let nb = 3;
            let n = nb * ty.block_size().max(QK_K) / ty.block_size() * ty.block_size();
            let n = n.max(QK_K);
            let mut w = vec![0u8; ty.row_bytes(n).unwrap()];
            crate::selftest::random_blocks(ty, &mut w, &mut rng);
            let mut wf = vec![0f32; n];
            dequantize_row(ty, &w, &mut wf);
            let x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let (got, yd) = if ty.block_size() == QK_K {
                let mut y = vec![BlockQ8_K::default(); n / QK_K];
                quantize_row_q8_k_ref(&x, &mut y);
                let yd: Vec<f64> = y.iter().flat_map(|b| b.qs.iter().map(move |&q| q as f64 * b.d as f64)).collect();
                (dot_q8_k_ref(ty, &w, &y), yd)
            } else {
                let mut y = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; n / 32];
                crate::q8_0::quantize_row_q8_0_ref(&x, &mut y);
                let ys: Vec<f32> =
                    x.chunks_exact(32).zip(&y).map(|(x, b)| q8_1_sum(x.try_into().unwrap(), &b.qs)).collect();
                let yd: Vec<f64> =
                    y.iter().flat_map(|b| b.qs.iter().map(move |&q| q as f64 * b.d.to_f32() as f64)).collect();
                (dot_q8_legacy_ref(ty, &w, &y, &ys), yd)
            };
            let want: f64 = wf.iter().zip(&yd).map(|(a, b)| *a as f64 * b).sum();
            let mag: f64 = wf.iter().zip(&yd).map(|(a, b)| (*a as f64 * b).abs()).sum();
            // Q4_1/Q5_1 fold m·Σy into the f16-rounded s: 2^-11 of Σ|m·y| per block on top of f32 rounding
            let tol = 1e-5 * mag + if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) { 1e-3 * mag } else { 0.0 };
            assert!((got as f64 - want).abs() <= tol + 1e-6, "{ty}: {got} vs {want} (tol {tol})");
        }
    }
}
