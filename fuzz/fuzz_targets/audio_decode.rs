//! Any bytes as a prompt's audio file through `decode_to_8k`, with the file-name hint the
//! loader would pass for a file of each kind (chosen by the input's length, so that no
//! byte of a seed file is spent on it). Seeds: `fuzz/seeds/audio_decode/` (WAVE in each
//! codec the loader reads, FLAC, Ogg Vorbis, MP3; made with sox).
//!
//! Invariants beyond "no crash" (and libFuzzer's own memory and time limits): the same
//! bytes decode the same way twice, and what decodes is at most the longest prompt the
//! loader accepts, resampled to 8 kHz.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vportal::media::prompts::{MAX_PROMPT_SAMPLES, decode_to_8k};

const HINTS: [Option<&str>; 6] = [
    None,
    Some("wav"),
    Some("flac"),
    Some("ogg"),
    Some("mp3"),
    Some("raw"),
];

fuzz_target!(|data: &[u8]| {
    let hint = HINTS[data.len() % HINTS.len()];
    let first = decode_to_8k(data, hint);
    if let Ok(samples) = &first {
        assert!(
            samples.len() <= MAX_PROMPT_SAMPLES,
            "{} samples decoded",
            samples.len()
        );
    }
    let again = decode_to_8k(data, hint);
    assert_eq!(
        first.as_ref().map_err(ToString::to_string),
        again.as_ref().map_err(ToString::to_string)
    );
});
