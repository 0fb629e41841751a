//! Frames a connection may open with, through the `Hello` decoding and admission.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    arepl_fuzz::hello::run(data);
});
