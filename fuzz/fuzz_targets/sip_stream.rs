//! Any byte stream through TCP framing, fed in two pieces at a fuzzer-chosen split.
//!
//! Invariant: the messages framed do not depend on where the stream was split.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vportal::sip::StreamFramer;

fn frame(parts: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut f = StreamFramer::new();
    let mut out = Vec::new();
    for part in parts {
        f.push(part);
        loop {
            match f.next_message() {
                Ok(Some(m)) => out.push(m.as_bytes().to_vec()),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = usize::from(data[0]) % data.len();
    let data = &data[1..];
    let split = split.min(data.len());
    let whole = frame(&[data]);
    let pieces = frame(&[&data[..split], &data[split..]]);
    if !whole.1 && !pieces.1 {
        assert_eq!(whole.0, pieces.0);
    }
});
