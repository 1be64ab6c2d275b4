#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rain_edge::fuzzing::config_parse(data));
