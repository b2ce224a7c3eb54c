//! Bit-exactness against the `gguf` Python package (`gguf.quants`), on the vectors that
//! `scripts/gen_quant_vectors.py` wrote to `tests/fixtures/quant/` (zeros, -0, ±f16 max, rounding ties,
//! tiny values, single peaks, random normals at three scales; an odd number of blocks).

use std::path::PathBuf;

use pixtral_quant::{dequantize_row_ref, quantize_row_ref, GgmlType};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run scripts/gen_quant_vectors.py)", p.display()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn quantize_and_dequantize_match_gguf_py_bit_for_bit() {
    let x = f32s(&fixture("input.f32"));
    assert_eq!(x.len() % 32, 0);
    assert!(x.len() / 32 % 2 == 1, "odd block count");
    for ty in
        [GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1]
    {
        let want = fixture(&format!("{ty}.bin"));
        let mut got = vec![0u8; ty.row_bytes(x.len()).unwrap()];
        quantize_row_ref(ty, &x, &mut got).unwrap();
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            let blk = i / (ty.type_size() * 32 / ty.block_size());
            panic!("{ty}: first differing byte {i} (block {blk}): got {:#04x}, want {:#04x}", got[i], want[i]);
        }
        assert_eq!(got.len(), want.len(), "{ty}");

        let want_dec = f32s(&fixture(&format!("{ty}.dequant.f32")));
        let mut dec = vec![0f32; x.len()];
        dequantize_row_ref(ty, &want, &mut dec).unwrap();
        for (i, (a, b)) in dec.iter().zip(&want_dec).enumerate() {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{ty} element {i}: {a} vs {b}");
        }
    }
}

/// The types the package can only decode: random blocks (finite scales of both signs down to subnormals, one block
/// of raw random bytes, one of 0xFF with NaN scales) decode to the package's values, to the bit (NaN where it has NaN).
#[test]
fn every_community_type_decodes_as_gguf_py_does() {
    use GgmlType::*;
    for ty in [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, IQ4_NL, Q4_1, Q5_0, Q5_1] {
        let enc = fixture(&format!("{ty}.random.bin"));
        let want = f32s(&fixture(&format!("{ty}.random.dequant.f32")));
        assert_eq!(ty.row_bytes(want.len()), Some(enc.len()), "{ty}");
        let mut got = vec![0f32; want.len()];
        dequantize_row_ref(ty, &enc, &mut got).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let blk = i / ty.block_size();
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{ty} element {i} (block {blk}): {a} vs {b}"
            );
        }
    }
}
