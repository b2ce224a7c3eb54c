#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pixtral::fuzz::image_preprocess(data));
