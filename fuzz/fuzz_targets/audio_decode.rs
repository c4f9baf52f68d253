//! Any bytes as a prompt's audio file through `decode_to_8k`, with the file-name hint the
//! loader would pass for a file of each kind (chosen by the input's length, so that no
//! byte of a seed file is spent on it). Seeds: `fuzz/seeds/audio_decode/` (WAVE in each
//! codec the loader reads, FLAC, Ogg Vorbis, MP3; made with sox).
//!
//! Invariants beyond "no crash" (and libFuzzer's own memory and time limits): the same
//! bytes decode the same way twice, and what decodes is at most the longest prompt the
//! loader accepts, resampled to 8 kHz.
//!
//! A panic inside a decoder crate (symphonia, hound) is caught by `decode_to_8k` and becomes
//! a decode error, so it is no crash here either; one in vportal's own code still is.

#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use vportal::media::prompts::{MAX_PROMPT_SAMPLES, decode_to_8k};

/// libFuzzer's panic hook aborts on every panic, even one caught; let those raised in a
/// dependency's source through to `decode_to_8k`'s guard, quietly. A dependency's source is
/// in Cargo's registry or git checkouts, wherever `CARGO_HOME` puts them (`~/.cargo`, or
/// `/usr/local/cargo` in the official Rust images).
fn panics_in_dependencies_are_caught() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_dependency = info.location().is_some_and(|l| {
                let file = l.file().replace('\\', "/");
                file.contains("/registry/src/") || file.contains("/git/checkouts/")
            });
            if !in_dependency {
                abort(info);
            }
        }));
    });
}

const HINTS: [Option<&str>; 6] = [
    None,
    Some("wav"),
    Some("flac"),
    Some("ogg"),
    Some("mp3"),
    Some("raw"),
];

fuzz_target!(|data: &[u8]| {
    panics_in_dependencies_are_caught();
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
