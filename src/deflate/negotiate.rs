//! The `permessage-deflate` negotiation of RFC 7692 §7 over `Sec-WebSocket-Extensions`: the
//! server takes the first offer it can honour, the client offers what it wants and checks the
//! answer. The header value's grammar (RFC 6455 §9.1: offers separated by `,`, parameters by
//! `;`, `name[=value]` with an optional quoted value) is read here; nothing else of HTTP is.
#![forbid(unsafe_code)]

use super::params::{Params, Settings};

/// The extension's name.
pub(crate) const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// One extension of the header: its name and `(parameter, value)` pairs.
#[derive(Debug, PartialEq)]
struct Offer {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// Every extension named in `headers` (each a `Sec-WebSocket-Extensions` value), in order.
fn offers<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<Offer> {
    let mut out = Vec::new();
    for header in headers {
        for extension in header.split(',') {
            let mut parts = extension.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let params = parts
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (
                        k.trim().to_ascii_lowercase(),
                        Some(v.trim().trim_matches('"').to_string()),
                    ),
                    None => (p.to_ascii_lowercase(), None),
                })
                .collect();
            out.push(Offer { name, params });
        }
    }
    out
}

/// A window size parameter's value: 8 to 15.
fn window_bits(value: &Option<String>) -> Option<u8> {
    let v: u8 = value.as_deref()?.parse().ok()?;
    (8..=15).contains(&v).then_some(v)
}

/// What one offer asks of the server, if every parameter is known, given once and valid.
#[derive(Default)]
struct Asked {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
}

fn read_offer(offer: &Offer) -> Option<Asked> {
    let mut asked = Asked::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &offer.params {
        if seen.contains(&name.as_str()) {
            return None;
        }
        seen.push(name);
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => asked.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => asked.client_no_context_takeover = true,
            ("server_max_window_bits", v) => asked.server_max_window_bits = Some(window_bits(v)?),
            // The client can limit its window; we inflate any window, so no value is needed.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", v) => {
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    Some(asked)
}

/// The server's answer to the client's `Sec-WebSocket-Extensions` headers: the parameters
/// in force and the response header's value, for the first `permessage-deflate` offer it
/// can honour; `None` declines (the connection goes on uncompressed).
pub(crate) fn server_accept<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    settings: &Settings,
) -> Option<(Params, String)> {
    if !settings.enabled {
        return None;
    }
    let (asked, _) = offers(headers)
        .into_iter()
        .filter(|o| o.name == PERMESSAGE_DEFLATE)
        .find_map(|o| read_offer(&o).map(|a| (a, ())))?;
    let window = asked
        .server_max_window_bits
        .unwrap_or(15)
        .min(settings.max_window_bits);
    let mut answer = String::from(PERMESSAGE_DEFLATE);
    if asked.server_no_context_takeover {
        answer.push_str("; server_no_context_takeover");
    }
    // Without ContextTakeover the client must not keep its context either: then no
    // connection holds an inflater between messages (docs/behaviour.md, Compression).
    let peer_context = settings.context_takeover && !asked.client_no_context_takeover;
    if !peer_context {
        answer.push_str("; client_no_context_takeover");
    }
    if window < 15 || asked.server_max_window_bits.is_some() {
        answer.push_str(&format!("; server_max_window_bits={window}"));
    }
    let params = Params {
        own_window_bits: window,
        own_context_takeover: settings.context_takeover
            && !asked.server_no_context_takeover
            && window == 15,
        peer_context_takeover: peer_context,
    };
    Some((params, answer))
}

/// What the client offers (`Sec-WebSocket-Extensions`), or `None` when compression is off.
pub(crate) fn client_offer(settings: &Settings) -> Option<String> {
    if !settings.enabled {
        return None;
    }
    let mut offer = format!("{PERMESSAGE_DEFLATE}; client_max_window_bits");
    if !settings.context_takeover {
        offer.push_str("; server_no_context_takeover; client_no_context_takeover");
    }
    Some(offer)
}

/// The parameters the server's answer puts in force for the client, `Ok(None)` when it
/// declined; an error (the client must fail the connection, RFC 7692 §5) for an answer it
/// did not offer or cannot honour.
pub(crate) fn client_accept<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    settings: &Settings,
) -> Result<Option<Params>, String> {
    let answers = offers(headers);
    let Some(answer) = answers.first() else {
        return Ok(None);
    };
    if !settings.enabled || answers.len() > 1 || answer.name != PERMESSAGE_DEFLATE {
        return Err(format!(
            "the server answered extensions we did not offer: {answers:?}"
        ));
    }
    let mut params = Params {
        own_window_bits: 15,
        own_context_takeover: settings.context_takeover,
        peer_context_takeover: true,
    };
    for (name, value) in &answer.params {
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => params.peer_context_takeover = false,
            ("client_no_context_takeover", None) => params.own_context_takeover = false,
            ("server_max_window_bits", v) if window_bits(v).is_some() => {}
            ("client_max_window_bits", v) if window_bits(v).is_some() => {
                params.own_window_bits = window_bits(v).unwrap_or(15);
            }
            _ => return Err(format!("permessage-deflate parameter {name:?} refused")),
        }
    }
    if params.own_window_bits < 15 {
        params.own_context_takeover = false;
    }
    Ok(Some(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn the_first_offer_we_can_honour_is_taken() {
        let (p, answer) = server_accept(
            ["permessage-deflate; x_unknown, permessage-deflate; server_max_window_bits=10; client_max_window_bits"],
            &settings(),
        )
        .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"
        );
        assert_eq!(
            (
                p.own_window_bits,
                p.own_context_takeover,
                p.peer_context_takeover
            ),
            (10, false, false)
        );
    }

    #[test]
    fn bad_offers_are_declined() {
        for bad in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert!(server_accept([bad], &settings()).is_none(), "{bad}");
        }
        let off = Settings {
            enabled: false,
            ..settings()
        };
        assert!(server_accept(["permessage-deflate"], &off).is_none());
    }

    #[test]
    fn browsers_offer_is_accepted_and_quoted_values_read() {
        let (_, answer) =
            server_accept(["permessage-deflate; client_max_window_bits"], &settings()).unwrap();
        assert_eq!(answer, "permessage-deflate; client_no_context_takeover");
        let (p, _) = server_accept(
            ["permessage-deflate; server_max_window_bits=\"12\""],
            &settings(),
        )
        .unwrap();
        assert_eq!(p.own_window_bits, 12);
        let takeover = Settings {
            context_takeover: true,
            ..settings()
        };
        let (p, answer) = server_accept(["permessage-deflate"], &takeover).unwrap();
        assert_eq!(answer, "permessage-deflate");
        assert!(p.own_context_takeover && p.peer_context_takeover);
    }

    #[test]
    fn the_client_checks_the_answer() {
        let s = settings();
        assert!(client_accept(Vec::<&str>::new(), &s).unwrap().is_none());
        let p = client_accept(
            ["permessage-deflate; server_no_context_takeover; client_max_window_bits=9"],
            &s,
        )
        .unwrap()
        .unwrap();
        assert_eq!((p.own_window_bits, p.peer_context_takeover), (9, false));
        assert!(client_accept(["permessage-deflate; bogus"], &s).is_err());
        assert!(client_accept(["other-extension"], &s).is_err());
    }
}
