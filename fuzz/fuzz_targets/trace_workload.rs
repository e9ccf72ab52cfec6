#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| refgate_fuzz::trace_workload(data));
