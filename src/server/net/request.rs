//! The upgrade request as the handshake reads it (parsed with `httparse`, what tungstenite
//! uses): method, path, query, subprotocols, credentials, and what is wrong with the upgrade
//! itself (RFC 6455 §4.1, §4.2.1, §4.4), found before tungstenite sees it so that the client
//! gets an answer.
#![forbid(unsafe_code)]

use crate::server::net::refusal::Rejection;

/// Most request headers parsed.
const MAX_HEADERS: usize = 48;

/// What the request head says, as far as we need it.
pub(crate) struct RequestHead {
    pub(crate) is_get: bool,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) is_upgrade: bool,
    pub(crate) protocols: Vec<String>,
    /// Every `Authorization` header (more than one is ambiguous and refused).
    pub(crate) authorization: Vec<String>,
    /// The request carries an `Origin` header: a browser, which cannot read an HTTP
    /// refusal's status or body (it only sees close 1006).
    pub(crate) from_browser: bool,
    /// Every `Sec-WebSocket-Extensions` header (permessage-deflate offers).
    pub(crate) extensions: Vec<String>,
    /// `Accept` names `text/html`: a browser asking for a page.
    pub(crate) accepts_html: bool,
    /// What is wrong with the upgrade itself (HTTP version, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version`), found before tungstenite sees it so the client gets an answer.
    pub(crate) upgrade_problem: Option<UpgradeProblem>,
    /// Bytes that came after the head: a client that did not wait for `101`.
    pub(crate) trailing_bytes: usize,
}

/// Why an upgrade request cannot be upgraded (RFC 6455 §4.1, §4.2.1, §4.4).
pub(crate) enum UpgradeProblem {
    /// Not HTTP/1.1 or later.
    HttpVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not the base64 of 16 bytes.
    Key(&'static str),
    /// `Sec-WebSocket-Version` missing or not 13: 426 with the version we speak.
    Version(String),
}

impl UpgradeProblem {
    pub(crate) fn rejection(&self) -> Rejection {
        match self {
            UpgradeProblem::HttpVersion => Rejection::new(
                400,
                "Bad Request",
                "invalid_message",
                "a WebSocket upgrade needs HTTP/1.1 (RFC 6455 4.1)",
            ),
            UpgradeProblem::Key(why) => Rejection::new(
                400,
                "Bad Request",
                "invalid_message",
                format!(
                    "Sec-WebSocket-Key {why}: send one header holding 16 random bytes in base64 (RFC 6455 4.1)"
                ),
            ),
            UpgradeProblem::Version(got) => Rejection::new(
                426,
                "Upgrade Required",
                "upgrade_required",
                format!(
                    "Sec-WebSocket-Version {got}: this server speaks version 13 (RFC 6455 4.4)"
                ),
            )
            .header("Sec-WebSocket-Version", "13"),
        }
    }
}

/// Whether `key` is what RFC 6455 §4.1 asks for: the base64 of 16 bytes, which is always
/// 22 base64 characters and `==` (no decoding is needed to know).
fn is_websocket_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Parses a complete request head (`bytes` ends at or after its `\r\n\r\n`); the error
/// says what is malformed.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<RequestHead, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(e.to_string()),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let all_headers: &[httparse::Header] = req.headers;
    let header = |name: &'static str| {
        all_headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let text = |h: &httparse::Header| String::from_utf8_lossy(h.value).into_owned();
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|h| {
            text(h)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    let is_upgrade = has_token("Upgrade", "websocket") && has_token("Connection", "upgrade");
    let keys: Vec<String> = header("Sec-WebSocket-Key")
        .map(|h| text(h).trim().to_string())
        .collect();
    let versions: Vec<String> = header("Sec-WebSocket-Version")
        .map(|h| text(h).trim().to_string())
        .collect();
    let upgrade_problem = if req.version != Some(1) {
        Some(UpgradeProblem::HttpVersion)
    } else if versions.len() != 1 || versions[0] != "13" {
        Some(UpgradeProblem::Version(match versions.len() {
            0 => "missing".into(),
            1 => format!("{:?}", versions[0]),
            _ => "given more than once".into(),
        }))
    } else {
        match keys.as_slice() {
            [] => Some(UpgradeProblem::Key("missing")),
            [k] if is_websocket_key(k) => None,
            [_] => Some(UpgradeProblem::Key("malformed")),
            _ => Some(UpgradeProblem::Key("given more than once")),
        }
    };
    let protocols = header("Sec-WebSocket-Protocol")
        .flat_map(|h| {
            text(h)
                .split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    Ok(RequestHead {
        is_get: req.method == Some("GET"),
        path: path.to_string(),
        query: query.to_string(),
        is_upgrade,
        protocols,
        authorization: header("Authorization").map(text).collect(),
        from_browser: header("Origin").next().is_some(),
        extensions: header("Sec-WebSocket-Extensions").map(text).collect(),
        accepts_html: header("Accept").any(|h| {
            text(h).split(',').any(|t| {
                let media = t.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("text/html")
            })
        }),
        upgrade_problem,
        trailing_bytes: bytes.len() - head_len,
    })
}
