//! A sender's stream, in arbitrary reads, through the frame decoder and the sequencer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    arepl_fuzz::session::run(data);
});
