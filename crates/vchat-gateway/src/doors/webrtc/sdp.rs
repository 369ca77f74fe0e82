//! What a WHIP request must hold before a peer connection is built for it: an
//! SDP offer of bounded size, with a video section that offers H.264.

/// Why an offer is refused, as the 4xx status and its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// Over `max_sdp_bytes` (413).
    TooLarge { size: usize, limit: usize },
    /// Not UTF-8 text, or not an SDP offer at all (400).
    NotSdp(String),
    /// An SDP without a video section (400).
    NoVideo,
    /// A video section without H.264 (400).
    NoH264(Vec<String>),
}

impl std::fmt::Display for OfferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OfferError::TooLarge { size, limit } => write!(
                f,
                "an SDP offer of {size} bytes is over the limit of {limit} bytes \
                 (webrtc.max_sdp_bytes)"
            ),
            OfferError::NotSdp(why) => write!(f, "the body is not an SDP offer: {why}"),
            OfferError::NoVideo => f.write_str(
                "the SDP offer has no video section (m=video): send the camera as a video track",
            ),
            OfferError::NoH264(codecs) => write!(
                f,
                "the SDP offer's video has no H.264 (offered: {}); this server decodes \
                 H.264 only: enable it in the browser or prefer it with setCodecPreferences",
                if codecs.is_empty() {
                    "nothing".to_string()
                } else {
                    codecs.join(", ")
                }
            ),
        }
    }
}

/// Checks the text of an offer: size first, then that it is text with a
/// video section offering H.264. The full parse is str0m's.
pub fn check_offer(body: &[u8], limit: usize) -> Result<&str, OfferError> {
    if body.len() > limit {
        return Err(OfferError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    let text =
        std::str::from_utf8(body).map_err(|_| OfferError::NotSdp("it is not UTF-8 text".into()))?;
    if !text.trim_start().starts_with("v=0") {
        return Err(OfferError::NotSdp(
            "it does not start with the SDP version line `v=0`".into(),
        ));
    }
    let mut in_video = false;
    let mut saw_video = false;
    let mut codecs: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ");
            saw_video |= in_video;
        } else if let Some(map) = line.strip_prefix("a=rtpmap:").filter(|_| in_video) {
            let codec = map
                .split_once(' ')
                .map(|(_, c)| c.split('/').next().unwrap_or(""))
                .unwrap_or("");
            if codec.eq_ignore_ascii_case("H264") {
                return Ok(text);
            }
            // Names only, bounded: the reason quotes them back.
            if codecs.len() < 16 && !codec.is_empty() && codec.len() <= 32 {
                let codec = codec.to_string();
                if !codecs.contains(&codec) {
                    codecs.push(codec);
                }
            }
        }
    }
    if !saw_video {
        return Err(OfferError::NoVideo);
    }
    Err(OfferError::NoH264(codecs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:102 H264/90000\r\n";

    #[test]
    fn an_offer_with_h264_passes() {
        assert!(check_offer(OFFER.as_bytes(), 1 << 16).is_ok());
    }

    #[test]
    fn offers_are_refused_with_their_reason() {
        let e = check_offer(OFFER.as_bytes(), 10).unwrap_err();
        assert!(matches!(e, OfferError::TooLarge { limit: 10, .. }));
        assert!(e.to_string().contains("webrtc.max_sdp_bytes"));
        let e = check_offer(b"\xff\xfe", 100).unwrap_err();
        assert!(matches!(e, OfferError::NotSdp(_)));
        let e = check_offer(b"hello, server", 100).unwrap_err();
        assert!(e.to_string().contains("v=0"), "{e}");
        let audio = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(
            check_offer(audio.as_bytes(), 1000).unwrap_err(),
            OfferError::NoVideo
        );
        let vp8 = OFFER.replace("H264", "VP9");
        let e = check_offer(vp8.as_bytes(), 1000).unwrap_err();
        assert_eq!(e, OfferError::NoH264(vec!["VP8".into(), "VP9".into()]));
        assert!(e.to_string().contains("H.264"), "{e}");
        // H.264 in an audio section does not count.
        let wrong = "v=0\r\nm=audio 9 RTP/AVP 102\r\na=rtpmap:102 H264/90000\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(matches!(
            check_offer(wrong.as_bytes(), 1000),
            Err(OfferError::NoH264(_))
        ));
    }

    #[test]
    fn bearer_tokens() {
        use vchat_auth::bearer;
        assert_eq!(bearer("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
