//! SPEC §3 `Jwt`: Bearer tokens by header, query and late auth; ES256, EdDSA and RS256 from
//! PEM; JWKS with `kid`; refusals for expired, not-yet-valid, wrong issuer, wrong audience,
//! wrong signature, `alg: none`, unknown `kid`; roles from `role` or `scope`.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use hydrogen_ws::JwtConfig;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::*;

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "hws-jwt-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, contents).unwrap();
    p
}

/// (private PKCS#8 PEM, public SPKI PEM)
fn keypair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let kp = rcgen::KeyPair::generate_for(alg).unwrap();
    (kp.serialize_pem(), kp.public_key_pem())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "iss": "hydrogen-tests", "aud": "printers", "exp": now() + 300, "role": "operator"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, private_pem: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, &key).unwrap()
}

fn jwt_server(setup: impl FnOnce(&mut JwtConfig)) -> hydrogen_ws::Server {
    let mut j = JwtConfig::default();
    j.issuer = Some("hydrogen-tests".into());
    j.audience = Some("printers".into());
    setup(&mut j);
    start_with(move |c| c.jwt = Some(j))
}

fn bearer(token: &str) -> String {
    upgrade_request(
        "/",
        &format!("Authorization: Bearer {token}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
    )
}

/// Connects with a Bearer token; returns the welcome's role.
fn role_with(server: &hydrogen_ws::Server, token: &str) -> String {
    let mut ws = connect_bearer(server.bound_addr(), token).expect("token accepted");
    read_welcome(&mut ws)["role"].as_str().unwrap().to_string()
}

#[test]
fn es256_token_by_header_query_and_late_auth() {
    let (private, public) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let path = temp_file("ec.pem", public.as_bytes());
    let server = jwt_server(|j| j.public_key_path = Some(path));
    let token = sign(Algorithm::ES256, None, &private, &claims(json!({})));
    assert_eq!(role_with(&server, &token), "operator");
    let mut by_query = try_connect(
        server.bound_addr(),
        None,
        &format!("/?token={token}"),
        Some(PROTOCOL),
    )
    .unwrap();
    assert_eq!(read_welcome(&mut by_query)["role"], "operator");
    let mut late = connect(server.bound_addr(), None);
    let r = request(&mut late, "a", "system", "auth", json!({"token": token}));
    assert_eq!(
        (r["data"]["role"].as_str(), r["data"]["name"].as_str()),
        (Some("operator"), Some("jwt:alice"))
    );
    // Keys still work next to tokens.
    let _ = connect(server.bound_addr(), Some(VIEWER_KEY));
    // A scope can carry the role instead.
    let scoped = sign(
        Algorithm::ES256,
        None,
        &private,
        &claims(json!({"role": null, "scope": "read admin"})),
    );
    assert_eq!(role_with(&server, &scoped), "admin");
    let plain = sign(
        Algorithm::ES256,
        None,
        &private,
        &claims(json!({"role": null})),
    );
    assert_eq!(role_with(&server, &plain), "viewer");
}

#[test]
fn refused_tokens_get_401_saying_why() {
    let (private, public) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (other_private, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let path = temp_file("ec.pem", public.as_bytes());
    let server = jwt_server(|j| j.public_key_path = Some(path));
    let none_token = {
        use base64_free::encode_url;
        format!(
            "{}.{}.",
            encode_url(br#"{"alg":"none","typ":"JWT"}"#),
            encode_url(claims(json!({})).to_string().as_bytes())
        )
    };
    let cases = [
        (
            sign(
                Algorithm::ES256,
                None,
                &private,
                &claims(json!({"exp": now() - 120})),
            ),
            "expired",
        ),
        (
            sign(
                Algorithm::ES256,
                None,
                &private,
                &claims(json!({"nbf": now() + 600})),
            ),
            "not valid yet",
        ),
        (
            sign(
                Algorithm::ES256,
                None,
                &private,
                &claims(json!({"iss": "someone-else"})),
            ),
            "issuer",
        ),
        (
            sign(
                Algorithm::ES256,
                None,
                &private,
                &claims(json!({"aud": "toasters"})),
            ),
            "audience",
        ),
        (
            sign(Algorithm::ES256, None, &other_private, &claims(json!({}))),
            "signature",
        ),
        (none_token, "malformed"),
        ("not.a.token".to_string(), "malformed"),
    ];
    for (token, why) in cases {
        let (status, head, body) = raw_http(server.bound_addr(), &bearer(&token));
        assert_eq!(status, 401, "{why}: {body}");
        assert!(head.contains("WWW-Authenticate"));
        assert_eq!(body["error"]["code"], "auth_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why}: {message}");
        assert!(!message.contains(&token), "the token is not echoed");
    }
}

#[test]
fn eddsa_and_rs256_public_keys() {
    let (ed_private, ed_public) = keypair(&rcgen::PKCS_ED25519);
    let path = temp_file("ed.pem", ed_public.as_bytes());
    let server = jwt_server(|j| j.public_key_path = Some(path));
    assert_eq!(
        role_with(
            &server,
            &sign(Algorithm::EdDSA, None, &ed_private, &claims(json!({})))
        ),
        "operator"
    );
    drop(server);
    let (rsa_private, rsa_public) = rsa_keypair();
    let path = temp_file("rsa.pem", rsa_public.as_bytes());
    let server = jwt_server(|j| j.public_key_path = Some(path));
    assert_eq!(
        role_with(
            &server,
            &sign(
                Algorithm::RS256,
                None,
                &rsa_private,
                &claims(json!({"role": "service"}))
            )
        ),
        "service"
    );
    // An algorithm outside the accepted list is refused even with a valid signature.
    let rs384 = {
        let mut h = Header::new(Algorithm::RS384);
        h.kid = None;
        encode(
            &h,
            &claims(json!({})),
            &EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let (status, _, body) = raw_http(server.bound_addr(), &bearer(&rs384));
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not accepted")
    );
}

#[test]
fn jwks_selects_the_key_by_kid() {
    let (ec_private, _) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let ed_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_private = ed_pair.serialize_pem();
    let mut ec = Jwk::from_encoding_key(
        &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
        Algorithm::ES256,
    )
    .unwrap();
    ec.common.key_id = Some("k1".into());
    // jsonwebtoken cannot derive an Ed25519 JWK from a private key: an OKP key is crv + x.
    let ed: Jwk = serde_json::from_value(json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "k2",
        "x": base64_free::encode_url(ed_pair.public_key_raw()),
    }))
    .unwrap();
    let set = JwkSet { keys: vec![ec, ed] };
    let path = temp_file("jwks.json", serde_json::to_string(&set).unwrap().as_bytes());
    let server = jwt_server(|j| j.jwks_path = Some(path));
    assert_eq!(
        role_with(
            &server,
            &sign(
                Algorithm::ES256,
                Some("k1"),
                &ec_private,
                &claims(json!({}))
            )
        ),
        "operator"
    );
    assert_eq!(
        role_with(
            &server,
            &sign(
                Algorithm::EdDSA,
                Some("k2"),
                &ed_private,
                &claims(json!({}))
            )
        ),
        "operator"
    );
    for (token, why) in [
        (
            sign(
                Algorithm::ES256,
                Some("k9"),
                &ec_private,
                &claims(json!({})),
            ),
            "unknown key id",
        ),
        (
            sign(Algorithm::ES256, None, &ec_private, &claims(json!({}))),
            "no kid",
        ),
        (
            sign(
                Algorithm::ES256,
                Some("k2"),
                &ec_private,
                &claims(json!({})),
            ),
            "",
        ),
    ] {
        let (status, _, body) = raw_http(server.bound_addr(), &bearer(&token));
        assert_eq!(status, 401, "{why}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
}

#[test]
fn bad_jwt_settings_are_config_errors() {
    let mut c = test_config();
    let mut j = JwtConfig::default();
    j.public_key_path = Some("/nonexistent/jwt.pem".into());
    c.jwt = Some(j.clone());
    let e = hydrogen_ws::Server::start(c.clone()).unwrap_err();
    assert!(
        e.to_string().contains("Jwt.PublicKeyPath")
            && e.to_string().contains("/nonexistent/jwt.pem"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
    j.algorithms = vec!["HS256".into()];
    c.jwt = Some(j);
    let e = hydrogen_ws::Server::start(c).unwrap_err();
    assert!(e.to_string().contains("symmetric"), "{e}");
}

/// base64url without padding, for hand-made tokens (the crate keeps its own private).
mod base64_free {
    pub fn encode_url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

/// Issue #11 §1.3: with Issuer and Audience configured, a token that leaves `iss` or `aud`
/// out is refused (not only one that names the wrong ones), and so is a token without
/// `sub`, which would otherwise share one identity with every other such token.
#[test]
fn tokens_missing_required_claims_are_refused() {
    let (private, public) = keypair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let path = temp_file("ec.pem", public.as_bytes());
    let server = jwt_server(|j| j.public_key_path = Some(path));
    let without = |claim: &str| {
        let mut c = claims(json!({}));
        c.as_object_mut().unwrap().remove(claim);
        sign(Algorithm::ES256, None, &private, &c)
    };
    for (claim, says) in [("iss", "iss"), ("aud", "aud"), ("sub", "sub")] {
        let (status, _, body) = raw_http(server.bound_addr(), &bearer(&without(claim)));
        assert_eq!(status, 401, "without {claim}: {body}");
        assert_eq!(body["error"]["code"], "auth_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "without {claim}: {message}");
    }
    let empty_sub = sign(
        Algorithm::ES256,
        None,
        &private,
        &claims(json!({"sub": ""})),
    );
    assert_eq!(raw_http(server.bound_addr(), &bearer(&empty_sub)).0, 401);
    // Late authentication applies the same rules.
    let mut late = connect(server.bound_addr(), None);
    let r = request(
        &mut late,
        "a",
        "system",
        "auth",
        json!({"token": without("aud")}),
    );
    assert_eq!(r["error"]["code"], "auth_failed", "{r}");
    // The complete token still works.
    assert_eq!(
        role_with(
            &server,
            &sign(Algorithm::ES256, None, &private, &claims(json!({})))
        ),
        "operator"
    );
}
