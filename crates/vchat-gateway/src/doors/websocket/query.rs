//! What a WebSocket handshake asks for: who may open one (the page's origin),
//! and the user and room of its query string.

use vchat_core::MAX_NAME_BYTES;

/// The user and room a WebSocket asks to stream as, from its query string.
#[derive(Debug, Clone, Default)]
pub struct JoinQuery {
    /// `user`, trimmed, at most 128 bytes.
    pub user: Option<String>,
    /// `room`, trimmed, at most 128 bytes.
    pub room: Option<String>,
    /// `access_token`, at most [`vchat_auth::MAX_TOKEN_BYTES`].
    pub token: Option<String>,
}

/// Whether a page of `origin` may open the WebSocket of a server reached as
/// `host` over `scheme`: its own origin, an allowed one, or no origin at all
/// (a client that is not a browser).
pub fn origin_allowed(
    origin: Option<&str>,
    host: Option<&str>,
    scheme: &str,
    allowed: &[String],
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    match (origin.split_once("://"), host) {
        (Some((s, authority)), Some(host)) => {
            s.eq_ignore_ascii_case(scheme) && authority.eq_ignore_ascii_case(host.trim())
        }
        _ => false,
    }
}

/// `user` and `room` of a query string (`application/x-www-form-urlencoded`).
pub fn parse_join_query(query: &str) -> Result<JoinQuery, String> {
    let mut who = JoinQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_decode(v).ok_or_else(|| format!("`{k}` is not valid UTF-8 once decoded"))?;
        let max = if k == "access_token" {
            vchat_auth::MAX_TOKEN_BYTES
        } else {
            MAX_NAME_BYTES
        };
        if value.len() > max {
            return Err(format!("`{k}` is longer than {max} bytes"));
        }
        let value = value.trim().to_string();
        match k {
            "access_token" if !value.is_empty() => who.token = Some(value),
            "user" if !value.is_empty() => who.user = Some(value),
            "room" if !value.is_empty() => who.room = Some(value),
            _ => {}
        }
    }
    Ok(who)
}

/// Form decoding (`%XX`, `+` for a space) of a query string's value; `None`
/// when the bytes it stands for are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Two hex digits exactly: `from_str_radix` alone would also take a sign
        // (`%+a` is `%`, a space and `a`, not byte 0x0a).
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none: Vec<String> = Vec::new();
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed(None, host, "http", &none));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8080"),
            host,
            "http",
            &none
        ));
        assert!(!origin_allowed(
            Some("https://127.0.0.1:8080"),
            host,
            "http",
            &none
        ));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            host,
            "http",
            &none
        ));
        assert!(!origin_allowed(Some("null"), host, "http", &none));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:8080"),
            None,
            "http",
            &none
        ));
        let listed = vec!["https://chat.example.org/".to_string()];
        assert!(origin_allowed(
            Some("https://chat.example.org"),
            host,
            "http",
            &listed
        ));
        assert!(!origin_allowed(
            Some("https://other.example.org"),
            host,
            "http",
            &listed
        ));
        let any = vec!["*".to_string()];
        assert!(origin_allowed(
            Some("http://evil.example"),
            host,
            "http",
            &any
        ));
    }

    #[test]
    fn query() {
        let w = parse_join_query("user=ann%20b&room=r+1&x=9").unwrap();
        assert_eq!(w.user.as_deref(), Some("ann b"));
        assert_eq!(w.room.as_deref(), Some("r 1"));
        let w = parse_join_query("room=&user=").unwrap();
        assert!(w.user.is_none() && w.room.is_none());
        assert!(parse_join_query("user=%ff").is_err());
        assert!(parse_join_query(&format!("user={}", "a".repeat(200))).is_err());
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("✓"));
    }
}
