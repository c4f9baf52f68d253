//! Any body through the SDP parser, and an offer that parses through `answer` and back
//! through `accept_answer`, as the peer would read the answer.
//!
//! Invariants beyond "no crash": an error's line number is a line of the body; an answer
//! has one `m=` line per offered stream, parses, and read back agrees with what was
//! negotiated (codec, payload types, ptime, our address, the direction reversed); the
//! negotiated ptime is within 10-60 ms; our offer parses and reads back as sent; a later
//! offer of ours keeps the answer's streams and telephone-event number.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use vportal::sip::sdp::{self, LocalMedia, SdpError};

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    let offer = match sdp::parse(data) {
        Ok(offer) => offer,
        Err(e) => {
            let line = match e {
                SdpError::UnsupportedVersion { line }
                | SdpError::MalformedLine { line }
                | SdpError::NotUtf8 { line }
                | SdpError::MalformedMedia { line }
                | SdpError::InvalidPort { line }
                | SdpError::InvalidPayloadType { line }
                | SdpError::TooManyFormats { line }
                | SdpError::MalformedConnection { line }
                | SdpError::UnsupportedAddressType { line }
                | SdpError::AddressTypeMismatch { line }
                | SdpError::MalformedRtpmap { line } => line,
                _ => 1,
            };
            assert!((1..=lines).contains(&line), "{e} in {lines} lines");
            return;
        }
    };
    assert!(offer.media().len() <= sdp::MAX_MEDIA);
    for m in offer.media() {
        assert!(m.formats().len() <= sdp::MAX_FORMATS);
        assert!(m.payload_types().iter().all(|&pt| pt <= 127));
    }

    let local = LocalMedia {
        addr: "127.0.0.1:40000".parse().unwrap(),
        session_id: 7,
        session_version: 1,
    };
    if let Ok((negotiated, body)) = sdp::answer(&offer, &local) {
        assert!((10..=60).contains(&negotiated.ptime_ms));
        let text = String::from_utf8(body.clone()).expect("answers are UTF-8");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("m=")).count(),
            offer.media().len()
        );
        let back = sdp::parse(&body).expect("our answer parses");
        assert_eq!(back.media().len(), offer.media().len());
        let read = sdp::accept_answer(&back).expect("our answer is acceptable");
        assert_eq!(read.codec, negotiated.codec);
        assert_eq!(read.payload_type, negotiated.payload_type);
        assert_eq!(read.telephone_event, negotiated.telephone_event);
        assert_eq!(read.ptime_ms, negotiated.ptime_ms);
        assert_eq!(read.remote_rtp, Some(local.addr));
        assert_eq!(read.direction, negotiated.direction.reversed());
        // RTCP: where RTP goes with a=rtcp-mux, which the answer then carries; else an
        // address of RTP's IP version. An answer to our offer never has mux.
        assert_eq!(text.contains("\r\na=rtcp-mux\r\n"), negotiated.rtcp_mux);
        // None without RTP, or for RTP on port 65535 without a=rtcp (no port above).
        assert!(negotiated.remote_rtcp.is_none() || negotiated.remote_rtp.is_some());
        if let (Some(rtp), Some(rtcp)) = (negotiated.remote_rtp, negotiated.remote_rtcp) {
            assert_eq!(rtp.is_ipv4(), rtcp.is_ipv4());
            assert!(!negotiated.rtcp_mux || rtp == rtcp);
        }
        assert!(!read.rtcp_mux);
        assert_eq!(read.remote_rtcp, Some("127.0.0.1:40001".parse().unwrap()));
        // Deterministic.
        assert_eq!(sdp::answer(&offer, &local).unwrap().1, body);
        let _ = sdp::answer_reachable(&offer, &local, "192.0.2.1".parse().unwrap());
        // A later offer of ours (a re-INVITE without SDP) keeps every stream in its place,
        // parses, and our answer to it, read as the answer to that offer, agrees.
        let layout = sdp::Layout::of_answer(&offer);
        let reoffer = sdp::parse(&sdp::reoffer(&local, &layout)).expect("our reoffer parses");
        assert_eq!(reoffer.media().len(), offer.media().len());
        let (agreed, answer) = sdp::answer(&reoffer, &local).expect("our reoffer is answerable");
        let read = sdp::accept_answer_to(&sdp::parse(&answer).unwrap(), &layout).unwrap();
        assert_eq!(read.telephone_event, agreed.telephone_event);
        assert_eq!(read.telephone_event_ours, None);
        // It keeps the codec and packet time the call runs on.
        assert_eq!(
            (agreed.codec, agreed.ptime_ms),
            (negotiated.codec, negotiated.ptime_ms)
        );
    }
    let _ = sdp::accept_answer(&offer);

    // Our own offer, with the body's first octets as numbers.
    let mut n = [0_u8; 8];
    for (slot, b) in n.iter_mut().zip(data) {
        *slot = *b;
    }
    let addr: SocketAddr = if n[0] & 1 == 0 {
        SocketAddr::new(
            [127, 0, 0, n[1]].into(),
            u16::from_be_bytes([n[2], n[3]]) | 1,
        )
    } else {
        SocketAddr::new(
            std::net::Ipv6Addr::from(u128::from(n[1])).into(),
            u16::from_be_bytes([n[2], n[3]]) | 1,
        )
    };
    let ours = LocalMedia {
        addr,
        session_id: u64::from(n[4]),
        session_version: u64::from(n[5]),
    };
    let parsed = sdp::parse(&sdp::offer(&ours)).expect("our offer parses");
    assert_eq!(parsed.media().len(), 1);
    assert_eq!(parsed.media()[0].port(), addr.port());
});
