//! A scripted SIP user agent client for tests: builds the requests a caller sends and reads
//! the responses and requests it gets back. No sockets and no clock: scenario tests move its
//! bytes over a virtual network, socket tests over real loopback sockets.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use vportal::sip::{HeaderName, Message, NameAddr};

/// One caller with one call.
pub struct Uac {
    /// Where the caller's signalling comes from.
    pub local: SocketAddr,
    /// The server.
    pub remote: SocketAddr,
    /// `UDP` or `TCP`, for the Via.
    pub transport: &'static str,
    /// The number dialled.
    pub target: String,
    /// The caller's user.
    pub user: String,
    pub call_id: String,
    pub from_tag: String,
    /// The server's tag, once a response carried it.
    pub to_tag: Option<String>,
    pub cseq: u32,
    /// The RTP address put in SDP offers and answers.
    pub media: SocketAddr,
    /// Header lines (without their CRLF) added to every INVITE, as a proxy would add
    /// `P-Asserted-Identity: <sip:2002@127.0.0.1>`. None by default.
    pub invite_headers: Vec<String>,
    branch_seq: u32,
    /// The branch and CSeq of the last INVITE (for CANCEL and non-2xx ACK).
    invite_branch: String,
    invite_cseq: u32,
}

impl Uac {
    pub fn new(local: SocketAddr, remote: SocketAddr, target: &str) -> Self {
        Self {
            local,
            remote,
            transport: "UDP",
            target: target.to_owned(),
            user: "1001".to_owned(),
            call_id: format!("test-{}@{}", local.port(), local.ip()),
            from_tag: format!("ft{}", local.port()),
            to_tag: None,
            cseq: 0,
            media: SocketAddr::new(local.ip(), local.port().wrapping_add(2000)),
            invite_headers: Vec::new(),
            branch_seq: 0,
            invite_branch: String::new(),
            invite_cseq: 0,
        }
    }

    /// A branch unique per call and request (the Call-ID's FNV-1a hash and a counter).
    fn branch(&mut self) -> String {
        self.branch_seq += 1;
        let hash = self
            .call_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("z9hG4bK-{hash:016x}-{}", self.branch_seq)
    }

    fn to_header(&self) -> String {
        let base = format!("<sip:{}@{}>", self.target, self.remote);
        match &self.to_tag {
            Some(tag) => format!("{base};tag={tag}"),
            None => base,
        }
    }

    fn headers(&self, method: &str, branch: &str, cseq: u32, cseq_method: &str) -> String {
        format!(
            "{method} sip:{target}@{remote} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Test\" <sip:{user}@{local_ip}>;tag={from_tag}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Contact: <sip:{user}@{local}>\r\n",
            target = self.target,
            remote = self.remote,
            transport = self.transport,
            local = self.local,
            // An IPv6 host in a URI is bracketed (RFC 3261 §19.1.1, RFC 5118 §4.2).
            local_ip = vportal::sip::Host::Ip(self.local.ip()),
            user = self.user,
            from_tag = self.from_tag,
            to = self.to_header(),
            call_id = self.call_id,
        )
    }

    fn with_body(head: String, content_type: &str, body: &str) -> Vec<u8> {
        if body.is_empty() {
            format!("{head}Content-Length: 0\r\n\r\n").into_bytes()
        } else {
            format!(
                "{head}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    }

    /// `IP4` or `IP6`: the SDP address type of the media address.
    fn addrtype(&self) -> &'static str {
        if self.media.is_ipv4() { "IP4" } else { "IP6" }
    }

    /// An SDP offer with PCMU, PCMA and telephone-event/8000 on 101.
    pub fn offer(&self, direction: &str) -> String {
        let ip = self.media.ip();
        let at = self.addrtype();
        format!(
            "v=0\r\no=test 1 1 IN {at} {ip}\r\ns=-\r\nc=IN {at} {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n",
            port = self.media.port()
        )
    }

    /// A later offer of the same session (a re-INVITE's or UPDATE's): [`Uac::offer`] with
    /// `version` in its `o=` line.
    pub fn reoffer(&self, direction: &str, version: u32) -> String {
        self.offer(direction)
            .replace("o=test 1 1 ", &format!("o=test 1 {version} "))
    }

    /// An SDP answer choosing PCMU and telephone-event/101.
    pub fn answer(&self) -> String {
        let ip = self.media.ip();
        let at = self.addrtype();
        format!(
            "v=0\r\no=test 2 1 IN {at} {ip}\r\ns=-\r\nc=IN {at} {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
            port = self.media.port()
        )
    }

    /// A new INVITE (initial or re-INVITE) with this SDP body (empty: late offer).
    pub fn invite(&mut self, sdp: &str) -> Vec<u8> {
        self.cseq += 1;
        let branch = self.branch();
        self.invite_branch.clone_from(&branch);
        self.invite_cseq = self.cseq;
        let mut head = self.headers("INVITE", &branch, self.cseq, "INVITE");
        for line in &self.invite_headers {
            head.push_str(line);
            head.push_str("\r\n");
        }
        Self::with_body(head, "application/sdp", sdp)
    }

    /// CANCEL for the last INVITE (same branch and CSeq number, §9.1).
    pub fn cancel(&self) -> Vec<u8> {
        let mut me = self.clone_for_cancel();
        me.to_tag = None;
        let head = me.headers("CANCEL", &self.invite_branch, self.invite_cseq, "CANCEL");
        Self::with_body(head, "", "")
    }

    fn clone_for_cancel(&self) -> Self {
        Self {
            local: self.local,
            remote: self.remote,
            transport: self.transport,
            target: self.target.clone(),
            user: self.user.clone(),
            call_id: self.call_id.clone(),
            from_tag: self.from_tag.clone(),
            to_tag: self.to_tag.clone(),
            cseq: self.cseq,
            media: self.media,
            invite_headers: self.invite_headers.clone(),
            branch_seq: self.branch_seq,
            invite_branch: self.invite_branch.clone(),
            invite_cseq: self.invite_cseq,
        }
    }

    /// ACK for a 2xx: a new transaction (new branch), the INVITE's CSeq number.
    pub fn ack_2xx(&mut self, sdp: &str) -> Vec<u8> {
        let branch = self.branch();
        let head = self.headers("ACK", &branch, self.invite_cseq, "ACK");
        Self::with_body(head, "application/sdp", sdp)
    }

    /// ACK for a non-2xx final response: the INVITE's branch (§17.1.1.3).
    pub fn ack_error(&self) -> Vec<u8> {
        let head = self.headers("ACK", &self.invite_branch, self.invite_cseq, "ACK");
        Self::with_body(head, "", "")
    }

    /// An in-dialog request (BYE, INFO, OPTIONS, UPDATE) with a new CSeq.
    pub fn request(&mut self, method: &str, content_type: &str, body: &str) -> Vec<u8> {
        self.cseq += 1;
        let branch = self.branch();
        let head = self.headers(method, &branch, self.cseq, method);
        Self::with_body(head, content_type, body)
    }

    /// Remembers the To tag of a response to our INVITE.
    pub fn learn_tag(&mut self, response: &Message) {
        if let Some(to) = response.values(HeaderName::To).next()
            && let Ok(n) = NameAddr::parse(to, HeaderName::To)
            && let Some(tag) = n.tag()
        {
            self.to_tag = Some(tag.to_owned());
        }
    }

    /// The 200 OK to a request the server sent us (its BYE).
    pub fn ok_to(request: &Message) -> Vec<u8> {
        let mut out = String::from("SIP/2.0 200 OK\r\n");
        for name in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            for value in request.values(name) {
                out.push_str(&format!("{}: {value}\r\n", name.as_str()));
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }
}

/// Parses bytes the server sent.
pub fn parse(bytes: &[u8]) -> Message {
    Message::parse_datagram(bytes.to_vec()).expect("the server sent a parseable message")
}

/// The status of a response, or 0 for a request.
pub fn status(bytes: &[u8]) -> u16 {
    parse(bytes).status().unwrap_or(0)
}
