//! The reference quantizers of the K-quants and IQ4_NL / IQ4_XS: ggml's `quantize_row_q{2,3,4,5,6}_K_ref` and
//! `quantize_iq4_{nl,xs}` (`ggml-quants.c`), which llama.cpp's `llama_model_quantize` runs when no importance matrix
//! is given. Ported operation for operation (the
//! same f32 expressions in the same order, ggml's `nearest_int` rounding half to even), so that a file quantized
//! here has llama.cpp's bytes (checked on llama.cpp's own output: `tests/llama_cpp_quants.rs`).

use half::f16;

use crate::kquants::{KVALUES_IQ4NL, QK_K};
use crate::GgmlType;

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even through the float's mantissa (|x| ≤ 2^22).
#[inline]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() as i32 & 0x007fffff) - 0x00400000
}

fn fp16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The first value of largest magnitude (its sign kept), `None` for an all-zero group (|max| < ggml's
/// `GROUP_MAX_EPS`): the start of `make_qx_quants` and `make_q3_quants`.
fn signed_peak(x: &[f32]) -> Option<f32> {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax >= GROUP_MAX_EPS).then_some(max)
}

/// ggml `make_qx_quants` with `qw = NULL` (Q6_K's sub-block scale search; `rmse_type` 1: weights x²).
fn make_qx_quants(x: &[f32], nmax: i32, l_out: &mut [i8], rmse_type: i32) -> f32 {
    let n = x.len();
    let Some(max) = signed_peak(x) else {
        l_out[..n].fill(0);
        return 0.0;
    };
    let w_of = |v: f32| match rmse_type {
        1 => v * v,
        2 => 1.0,
        3 => v.abs(),
        _ => v.abs().sqrt(),
    };
    let mut iscale = -nmax as f32 / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = w_of(v);
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = w_of(v);
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                l_out[i] = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml `make_q3_quants` with `do_rmse` (Q3_K's sub-block scale search).
fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let Some(max) = signed_peak(x) else {
        l_out[..n].fill(0);
        return 0.0;
    };
    let iscale = -nmax as f32 / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l_out[i] = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * v * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l_out[..n].iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml `make_qkx2_quants`: scale and min of an asymmetric sub-block by a grid search of `nstep + 1` scales,
/// weighted squared (or absolute, `use_mad`) error. Returns `(scale, -min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    x: &[f32],
    nmax: i32,
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut laux = [0u8; 32];
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nm = nmax as f32;
    let mut iscale = nm / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nm) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `get_scale_min_k4` on the packed bytes being written.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// One super-block of 256 values into `dst` (`ty.type_size()` bytes), as ggml's reference quantizer of `ty`
/// (Q2_K … Q6_K) writes it.
#[allow(clippy::needless_range_loop)] // index loops as ggml's
pub fn quantize_block_k(ty: GgmlType, x: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(x.len(), QK_K);
    dst.fill(0);
    match ty {
        GgmlType::Q2_K => {
            let (mut l, mut scales, mut mins) = ([0u8; QK_K], [0f32; 16], [0f32; 16]);
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for j in 0..16 {
                let xs = &x[16 * j..16 * j + 16];
                let w: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
                let (s, m) = make_qkx2_quants(xs, 3, &w, &mut l[16 * j..], -0.5, 0.1, 15, true);
                (scales[j], mins[j]) = (s, m);
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            let q4scale = 15f32;
            if max_scale > 0.0 {
                let iscale = q4scale / max_scale;
                for j in 0..16 {
                    dst[j] = nearest_int(iscale * scales[j]) as u8;
                }
                put_f16(dst, 80, max_scale / q4scale);
            } else {
                put_f16(dst, 80, 0.0);
            }
            if max_min > 0.0 {
                let iscale = q4scale / max_min;
                for j in 0..16 {
                    dst[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                }
                put_f16(dst, 82, max_min / q4scale);
            } else {
                put_f16(dst, 82, 0.0);
            }
            let (dd, dmin) = (f16_at(dst, 80), f16_at(dst, 82));
            for j in 0..16 {
                let d = dd * (dst[j] & 0xF) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = dmin * (dst[j] >> 4) as f32;
                for ii in 0..16 {
                    l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
                }
            }
            for j in (0..QK_K).step_by(128) {
                for i in 0..32 {
                    dst[16 + j / 4 + i] = l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
                }
            }
        }
        GgmlType::Q3_K => {
            let (mut l, mut scales) = ([0i8; QK_K], [0f32; 16]);
            let (mut max_scale, mut amax) = (0f32, 0f32);
            for j in 0..16 {
                scales[j] = make_q3_quants(&x[16 * j..16 * j + 16], 4, &mut l[16 * j..]);
                if scales[j].abs() > amax {
                    amax = scales[j].abs();
                    max_scale = scales[j];
                }
            }
            let sc = &mut dst[96..108];
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for j in 0..16 {
                    let mut lv = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
                    if j < 8 {
                        sc[j] = (lv & 0xF) as u8;
                    } else {
                        sc[j - 8] |= ((lv & 0xF) << 4) as u8;
                    }
                    lv >>= 4;
                    sc[j % 4 + 8] |= (lv << (2 * (j / 4))) as u8;
                }
                put_f16(dst, 108, 1.0 / iscale);
            } else {
                put_f16(dst, 108, 0.0);
            }
            let dd = f16_at(dst, 108);
            for j in 0..16 {
                let sc = &dst[96..108];
                let lo = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 } as i8;
                let s = (lo | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) as i8) - 32;
                let d = dd * s as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
                }
            }
            let (mut m, mut hm) = (0usize, 1u8);
            for j in 0..QK_K {
                if l[j] > 3 {
                    dst[m] |= hm;
                    l[j] -= 4;
                }
                m += 1;
                if m == QK_K / 8 {
                    m = 0;
                    hm <<= 1;
                }
            }
            for j in (0..QK_K).step_by(128) {
                for i in 0..32 {
                    dst[32 + j / 4 + i] =
                        (l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6)) as u8;
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let q5 = ty == GgmlType::Q5_K;
            let (nmax, rmin, nstep) = if q5 { (31, -0.5, 15) } else { (15, -1.0, 20) };
            let (mut l, mut scales, mut mins) = ([0u8; QK_K], [0f32; 8], [0f32; 8]);
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let mut sum_x2 = 0f32;
                for &v in xs {
                    sum_x2 += v * v;
                }
                let av_x = (sum_x2 / 32.0).sqrt();
                let w: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
                let (s, m) = make_qkx2_quants(xs, nmax, &w, &mut l[32 * j..], rmin, 0.1, nstep, false);
                (scales[j], mins[j]) = (s, m);
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            let sc = &mut dst[4..16];
            for j in 0..8 {
                let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
                let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
                if j < 4 {
                    sc[j] = ls;
                    sc[j + 4] = lm;
                } else {
                    sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                    sc[j - 4] |= (ls >> 4) << 6;
                    sc[j] |= (lm >> 4) << 6;
                }
            }
            put_f16(dst, 0, max_scale / 63.0);
            put_f16(dst, 2, max_min / 63.0);
            let (dd, dmin) = (f16_at(dst, 0), f16_at(dst, 2));
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, &dst[4..16]);
                let d = dd * s as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = dmin * m as f32;
                for ii in 0..32 {
                    l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
                }
            }
            if q5 {
                let (mut m1, mut m2) = (1u8, 2u8);
                for (c, n) in (0..QK_K).step_by(64).enumerate() {
                    for j in 0..32 {
                        let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
                        if l1 > 15 {
                            l1 -= 16;
                            dst[16 + j] |= m1;
                        }
                        if l2 > 15 {
                            l2 -= 16;
                            dst[16 + j] |= m2;
                        }
                        dst[48 + 32 * c + j] = l1 | (l2 << 4);
                    }
                    m1 <<= 2;
                    m2 <<= 2;
                }
            } else {
                for (c, j) in (0..QK_K).step_by(64).enumerate() {
                    for i in 0..32 {
                        dst[16 + 32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            let (mut l, mut scales) = ([0i8; QK_K], [0f32; 16]);
            let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
            for ib in 0..16 {
                let s = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..], 1);
                scales[ib] = s;
                if s.abs() > max_abs_scale {
                    max_abs_scale = s.abs();
                    max_scale = s;
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                put_f16(dst, 208, 0.0);
                return;
            }
            let iscale = -128.0 / max_scale;
            put_f16(dst, 208, 1.0 / iscale);
            for ib in 0..16 {
                dst[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
            }
            let dd = f16_at(dst, 208);
            for j in 0..16 {
                let d = dd * dst[192 + j] as i8 as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
                }
            }
            for (h, j) in (0..QK_K).step_by(128).enumerate() {
                for i in 0..32 {
                    let q = |o: usize| l[j + i + o] as u8;
                    dst[64 * h + i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
                    dst[64 * h + i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
                    dst[128 + 32 * h + i] =
                        (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
                }
            }
        }
        other => unreachable!("{other} is not a K type"),
    }
}

/// ggml `best_index_int8` on the IQ4_NL grid: the index of the grid value nearest `x` (a tie takes the upper one,
/// as ggml's final `x − v[mu−1] < v[mu] − x`).
fn best_index_iq4(x: f32) -> usize {
    let v = |i: usize| KVALUES_IQ4NL[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        mu - 1
    } else {
        mu
    }
}

/// One IQ4_NL block (32 values, 18 bytes) or IQ4_XS super-block (256 values, 136 bytes) into `dst`: ggml's
/// `quantize_row_iq4_nl_impl` as `quantize_iq4_nl` / `quantize_iq4_xs` call it without an importance matrix
/// (`llama_model_quantize`'s path: weights x², `ntry` 7). Per sub-block of 32: the signed peak maps to the grid's
/// −127, then 15 scales `(t − 127)/max`, t = −7…7, are tried and the best weighted least-squares scale kept;
/// IQ4_XS then stores the sub-block scales as 6-bit multiples (offset 32) of `d = −max_scale/32` and
/// re-picks every weight's grid index for the stored scale.
pub fn quantize_block_iq4(ty: GgmlType, x: &[f32], dst: &mut [u8]) {
    const NTRY: i32 = 7;
    let nsub = if ty == GgmlType::IQ4_XS { QK_K / 32 } else { 1 };
    debug_assert!(x.len() == 32 * nsub && dst.len() == ty.type_size());
    let values = |i: usize| KVALUES_IQ4NL[i] as f32;
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for ib in 0..nsub {
        let xb = &x[32 * ib..32 * ib + 32];
        let weight: [f32; 32] = std::array::from_fn(|j| xb[j] * xb[j]);
        let Some(max) = signed_peak(xb) else {
            scales[ib] = 0.0;
            continue;
        };
        // Σ w·q·x and Σ w·q² of the grid values picked at inverse scale `id` (ggml stores the first pass's indices,
        // but every path re-picks them below)
        let sums = |id: f32| {
            let (mut sumqx, mut sumq2) = (0f32, 0f32);
            for j in 0..32 {
                let q = values(best_index_iq4(id * xb[j]));
                sumqx += weight[j] * q * xb[j];
                sumq2 += weight[j] * q * q;
            }
            (sumqx, sumq2)
        };
        let (sumqx, sumq2) = sums(1.0 / (-max / values(0)));
        let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            let (sumqx, sumq2) = sums((itry + KVALUES_IQ4NL[0] as i32) as f32 / max);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let qs_at = if nsub > 1 {
        let d = -max_scale / 32.0;
        put_f16(dst, 0, d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
        for ib in 0..nsub {
            let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 0..32 {
                l[32 * ib + j] = best_index_iq4(idl * x[32 * ib + j]) as u8;
            }
            let ls = (ls + 32) as u8;
            scales_l[ib / 2] |= (ls & 0xF) << (4 * (ib % 2));
            scales_h |= ((ls >> 4) as u16) << (2 * ib);
        }
        dst[2..4].copy_from_slice(&scales_h.to_le_bytes());
        dst[4..8].copy_from_slice(&scales_l);
        8
    } else {
        put_f16(dst, 0, scales[0]);
        let id = if scales[0] != 0.0 { 1.0 / scales[0] } else { 0.0 };
        for j in 0..32 {
            l[j] = best_index_iq4(id * x[j]) as u8;
        }
        2
    };
    for i in 0..nsub {
        for j in 0..16 {
            dst[qs_at + 16 * i + j] = l[32 * i + j] | l[32 * i + 16 + j] << 4;
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    fp16(f16::from_le_bytes([b[i], b[i + 1]]).to_f32())
}
