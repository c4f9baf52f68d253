//! Any byte stream through TCP framing, fed whole, in two pieces at every split point, and
//! a byte at a time.
//!
//! Invariant: what comes out (the messages framed, whether framing failed, the keepalive
//! pings seen) does not depend on how the stream was cut.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vportal::sip::StreamFramer;

/// What framing the stream cut into `parts` gives: the messages, whether it failed (it stops
/// there, as a connection is closed), and the pings.
fn frame<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, bool, usize) {
    let mut f = StreamFramer::new();
    let mut out = Vec::new();
    let mut pings = 0;
    for part in parts {
        f.push(part);
        pings += f.take_pings();
        loop {
            match f.next_message() {
                Ok(Some(m)) => out.push(m.as_bytes().to_vec()),
                Ok(None) => break,
                Err(_) => return (out, true, pings + f.take_pings()),
            }
        }
        pings += f.take_pings();
    }
    (out, false, pings)
}

fuzz_target!(|data: &[u8]| {
    // Longer streams cost a framing per byte twice over; libFuzzer's default limit is 4 KiB.
    if data.len() > 4096 {
        return;
    }
    let whole = frame([data]);
    for split in 0..=data.len() {
        let (head, tail) = data.split_at(split);
        assert_eq!(frame([head, tail]), whole, "split at {split}");
    }
    assert_eq!(frame(data.chunks(1)), whole, "a byte at a time");
});
