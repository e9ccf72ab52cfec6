#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| refgate_fuzz::inspect_summary(data));
