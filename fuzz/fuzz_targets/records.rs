#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hvsandbox_fuzz::records(data));
