//! The Prometheus recorder and the names vportal records.

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for `vportal_argon2_verify_seconds`: a check takes 10–20 ms on one idle core and
/// longer under load.
const HASH_BUCKETS: &[f64] = &[
    0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5,
];

/// Installs the process-wide Prometheus recorder and describes every metric; returns the
/// handle that renders them. Call once, before the server starts.
///
/// # Errors
/// When a recorder is installed already.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("vportal_argon2_verify_seconds".into()),
            HASH_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(BuildError::FailedToSetGlobalRecorder)?;
    describe();
    Ok(handle)
}

/// Keeps the recorder's histograms tidy; runs for as long as the server does.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// Why the server itself may refuse a new call (`vportal_calls_refused_total`), besides the
/// endpoint's reasons ([`crate::sip::endpoint::RefusedCalls`]).
const SERVER_REFUSALS: [&str; 3] = ["no_rtp_port", "no_prompts", "error"];

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("vportal_calls_active", "Calls in progress.");
    describe_counter!(
        "vportal_calls_total",
        "Calls ended, by outcome (logged_in, changed, login_failed, locked, expired, abandoned, …)."
    );
    describe_counter!(
        "vportal_calls_refused_total",
        "New calls refused before they began, by reason: no_route (404), full (max_calls), source_limit (max_pending_calls_per_source), stopping, no_rtp_port (rtp.ports all in use), no_prompts, error."
    );
    describe_counter!(
        "vportal_logins_total",
        "Passcode checks, by outcome (ok, ok_temporary, wrong (also the one that locks), unknown, locked (refused while locked), expired)."
    );
    describe_counter!(
        "vportal_passcode_changes_total",
        "Passcode changes by callers, by outcome."
    );
    describe_counter!(
        "vportal_lockouts_total",
        "Mailboxes locked by failed logins."
    );
    describe_counter!(
        "vportal_dtmf_digits_total",
        "Keys received, by method (rfc4733, sip_info, inband)."
    );
    describe_counter!(
        "vportal_dtmf_copies_total",
        "Keys heard again by a second method and counted once, by the second method."
    );
    describe_counter!(
        "vportal_sip_requests_total",
        "SIP requests, by direction (in, out) and method."
    );
    describe_counter!(
        "vportal_sip_responses_total",
        "SIP responses, by direction (in, out) and class (1xx … 6xx)."
    );
    describe_counter!(
        "vportal_sip_dropped_total",
        "SIP input dropped without an answer, by reason: unanswerable (a datagram that is not SIP, a request without a Via, a malformed ACK, a response to no request of ours), tcp_connection (a connection refused over the connection limits), tcp_backlog (an answer dropped for a peer not reading its connection)."
    );
    describe_counter!(
        "vportal_sip_unkept_total",
        "In-dialog requests answered without keeping their transaction: their dialog had kept all it may (256 KiB)."
    );
    describe_counter!("vportal_rtp_packets_sent_total", "RTP packets sent.");
    describe_counter!(
        "vportal_rtcp_packets_total",
        "RTCP compound packets, by direction: sent (out), and received from the call's peer and valid (in)."
    );
    describe_counter!(
        "vportal_store_errors_total",
        "Credential-store operations that failed (database errors, not refusals)."
    );
    describe_histogram!(
        "vportal_argon2_verify_seconds",
        Unit::Seconds,
        "Time of one argon2id passcode check."
    );
    // Counters show from the start, at zero, each outcome too: a rate over a series that
    // appears at its first event misses that event.
    for outcome in crate::ivr::flow::Outcome::ENDED {
        metrics::counter!("vportal_calls_total", "outcome" => outcome.as_str()).absolute(0);
    }
    let endpoint_refusals = crate::sip::endpoint::RefusedCalls::default().by_reason();
    for reason in endpoint_refusals
        .map(|(reason, _)| reason)
        .into_iter()
        .chain(SERVER_REFUSALS)
    {
        metrics::counter!("vportal_calls_refused_total", "reason" => reason).absolute(0);
    }
    for outcome in crate::store::LOGIN_OUTCOMES {
        metrics::counter!("vportal_logins_total", "outcome" => outcome).absolute(0);
    }
    for outcome in crate::store::CHANGE_OUTCOMES {
        metrics::counter!("vportal_passcode_changes_total", "outcome" => outcome).absolute(0);
    }
    for method in crate::media::digit::DtmfMethod::ALL {
        metrics::counter!("vportal_dtmf_digits_total", "method" => method.as_str()).absolute(0);
        metrics::counter!("vportal_dtmf_copies_total", "method" => method.as_str()).absolute(0);
    }
    for direction in ["in", "out"] {
        for method in SIP_METHODS {
            metrics::counter!("vportal_sip_requests_total", "direction" => direction, "method" => method)
                .absolute(0);
        }
        for class in SIP_CLASSES {
            metrics::counter!("vportal_sip_responses_total", "direction" => direction, "class" => class)
                .absolute(0);
        }
    }
    metrics::counter!("vportal_lockouts_total").absolute(0);
    for reason in SIP_DROP_REASONS {
        metrics::counter!("vportal_sip_dropped_total", "reason" => reason).absolute(0);
    }
    metrics::counter!("vportal_sip_unkept_total").absolute(0);
    metrics::counter!("vportal_rtp_packets_sent_total").absolute(0);
    for direction in ["in", "out"] {
        metrics::counter!("vportal_rtcp_packets_total", "direction" => direction).absolute(0);
    }
    metrics::counter!("vportal_store_errors_total").absolute(0);
    metrics::gauge!("vportal_calls_active").set(0.0);
}

/// Why SIP input was dropped unanswered (`vportal_sip_dropped_total`).
const SIP_DROP_REASONS: [&str; 3] = ["unanswerable", "tcp_connection", "tcp_backlog"];

/// The request methods counted by name; any other is `other`.
const SIP_METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// Response classes by status code's first digit; anything else is `other`.
const SIP_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "other"];

/// What a SIP message is counted as, by its first line.
#[derive(Debug, PartialEq, Eq)]
enum SipLabel {
    /// A response of this class (`2xx`, …).
    Response(&'static str),
    /// A request with this method (or `other`).
    Request(&'static str),
    /// No SIP message: a first line that is neither a status line nor a request line (a
    /// keepalive's blank lines, a stray datagram). Counted as no request; what was dropped
    /// is counted where it is dropped.
    NotSip,
}

fn sip_label(message: &[u8]) -> SipLabel {
    // As the parser reads a start line (RFC 3261 §7.5: CRLFs before it are skipped; §7.1:
    // the version is case-insensitive; words apart by any run of spaces and tabs).
    let start = message
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(message.len());
    let line = message[start..]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let mut words = line
        .split(|b| matches!(b, b' ' | b'\t' | b'\r'))
        .filter(|w| !w.is_empty());
    let is_version = |w: &[u8]| w.len() > 4 && w[..4].eq_ignore_ascii_case(b"SIP/");
    let (Some(first), Some(second)) = (words.next(), words.next()) else {
        return SipLabel::NotSip;
    };
    if is_version(first) {
        return SipLabel::Response(match second {
            [d @ b'1'..=b'6', _, _] => SIP_CLASSES[usize::from(d - b'1')],
            _ => "other",
        });
    }
    // A request line: method, Request-URI, SIP version (any version: a request of another
    // is still a request, answered 505).
    match (words.next(), words.next()) {
        (Some(version), None) if is_version(version) => {}
        _ => return SipLabel::NotSip,
    }
    SipLabel::Request(
        SIP_METHODS
            .iter()
            .find(|m| m.as_bytes() == first)
            .copied()
            .unwrap_or("other"),
    )
}

/// Counts one SIP message by its first line (`direction` is `in` or `out`).
pub fn count_sip(direction: &'static str, message: &[u8]) {
    match sip_label(message) {
        SipLabel::Response(class) => {
            metrics::counter!("vportal_sip_responses_total", "direction" => direction, "class" => class)
                .increment(1);
        }
        SipLabel::Request(method) => {
            metrics::counter!("vportal_sip_requests_total", "direction" => direction, "method" => method)
                .increment(1);
        }
        SipLabel::NotSip => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_messages_are_labelled_by_class_or_method() {
        let cases: [(&[u8], SipLabel); 18] = [
            (b"SIP/2.0 100 Trying\r\n", SipLabel::Response("1xx")),
            (b"SIP/2.0 200 OK\r\n", SipLabel::Response("2xx")),
            (
                b"SIP/2.0 487 Request Terminated\r\n",
                SipLabel::Response("4xx"),
            ),
            (b"SIP/2.0 603 Decline\r\n", SipLabel::Response("6xx")),
            (b"SIP/2.0 999 Odd\r\n", SipLabel::Response("other")),
            (
                b"INVITE sip:8500@127.0.0.1 SIP/2.0\r\n",
                SipLabel::Request("INVITE"),
            ),
            (
                b"PUBLISH sip:x@127.0.0.1 SIP/2.0\r\n",
                SipLabel::Request("PUBLISH"),
            ),
            (
                b"invite sip:8500@127.0.0.1 SIP/2.0\r\n",
                SipLabel::Request("other"),
            ),
            (
                b"FOO sip:8500@127.0.0.1 SIP/2.0\r\n",
                SipLabel::Request("other"),
            ),
            (
                b"OPTIONS sip:8500@127.0.0.1 SIP/3.0\r\n",
                SipLabel::Request("OPTIONS"),
            ),
            // Read as the parser reads them: CRLFs before the start line, the version in
            // any case, words apart by runs of spaces and tabs.
            (
                b"\r\n\r\nOPTIONS sip:8500@127.0.0.1 SIP/2.0\r\n",
                SipLabel::Request("OPTIONS"),
            ),
            (
                b"OPTIONS  sip:8500@127.0.0.1\tsip/2.0\r\n",
                SipLabel::Request("OPTIONS"),
            ),
            (b"sip/2.0 180 Ringing\r\n", SipLabel::Response("1xx")),
            (b"SIP/2.0 2000 Odd\r\n", SipLabel::Response("other")),
            // No SIP message: no request counted.
            (b"\r\n\r\n", SipLabel::NotSip),
            (b"hello", SipLabel::NotSip),
            (b"GET / HTTP/1.1\r\n", SipLabel::NotSip),
            (b"", SipLabel::NotSip),
        ];
        for (message, label) in cases {
            assert_eq!(
                sip_label(message),
                label,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
        // Every label a message can get is among those set to 0 at start.
        assert!(SIP_CLASSES.contains(&"other") && SIP_METHODS.contains(&"other"));
    }
}
