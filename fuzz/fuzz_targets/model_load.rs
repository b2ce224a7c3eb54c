#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pixtral::fuzz::model_load(data));
