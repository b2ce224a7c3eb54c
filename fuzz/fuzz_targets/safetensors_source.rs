#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pixtral::fuzz::safetensors_source(data));
