//! Any text as a prompt folder's `prompts.toml` through `PromptSet::from_files`; every audio
//! file it names reads as the same short 8 kHz WAV.
//!
//! Invariants beyond "no crash": every line an error names is a line of the manifest; a set
//! that loads holds every required prompt.

#![no_main]

use std::io;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vportal::media::prompts::{MANIFEST, PromptError, PromptSet, REQUIRED};

/// 20 ms of 8 kHz mono 16-bit PCM in a WAVE file.
fn wav() -> Vec<u8> {
    let samples = 160_u32;
    let data_len = samples * 2;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16_u32.to_le_bytes());
    out.extend_from_slice(&1_u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1_u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000_u32.to_le_bytes());
    out.extend_from_slice(&16000_u32.to_le_bytes());
    out.extend_from_slice(&2_u16.to_le_bytes());
    out.extend_from_slice(&16_u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        out.extend_from_slice(&((i as i16 - 80) * 100).to_le_bytes());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = Path::new("prompts/xx");
    let manifest = dir.join(MANIFEST);
    let audio = wav();
    let lines = data.split(|&b| b == b'\n').count();
    let result = PromptSet::from_files(dir, |path| {
        if path == manifest {
            Ok(data.to_vec())
        } else if path.starts_with(dir) {
            Ok(audio.clone())
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    });
    let line = match result {
        Ok(set) => {
            for id in REQUIRED {
                assert!(set.get(id).is_some(), "{id} missing");
            }
            return;
        }
        Err(PromptError::Manifest { line, .. }) => line,
        Err(
            PromptError::ReadAudio { line, .. }
            | PromptError::Decode { line, .. }
            | PromptError::EmptyAudio { line, .. },
        ) => Some(line),
        Err(PromptError::Read { .. } | PromptError::MissingRequired { .. }) => None,
    };
    if let Some(line) = line {
        assert!((1..=lines).contains(&line), "line {line} of {lines}");
    }
});
