#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pixtral::fuzz::tokenizer_roundtrip(data));
