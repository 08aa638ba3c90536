//! Parsers for the nested sections of `WebSocketServer`: Keys, Delivery, RateLimit, Jwt, and
//! the log level.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::reader::Section;
use super::{DeliveryConfig, LoadReport, RateLimitConfig};
use crate::error::Error;
use crate::server::security::identity::{ApiKey, Role};
use crate::server::security::jwt::JwtConfig;

pub(super) fn parse_keys(v: &Value) -> Result<Vec<ApiKey>, Error> {
    let Value::Array(items) = v else {
        return Err(Error::config(
            "WebSocketServer.Keys",
            "must be an array of {\"Name\",\"Key\",\"Role\"}",
        ));
    };
    let mut keys = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("WebSocketServer.Keys[{i}]");
        let map = Section::as_object(item, &path)?;
        let mut s = Section::new(&path, &map);
        let name = s.take_str("Name")?.unwrap_or_else(|| format!("key{i}"));
        let role_name = s.take_str("Role")?.unwrap_or_else(|| "viewer".into());
        let role = Role::from_name(&role_name).ok_or_else(|| {
            Error::config(
                format!("{path}.Role"),
                format!("{role_name:?}: allowed viewer, operator, admin, service"),
            )
        })?;
        // A key whose environment variable is unset is skipped, as the single `Key` is.
        if let Some(secret) = s.take_str("Key")? {
            keys.push(ApiKey::new(
                &name,
                super::non_blank_key(secret, &format!("{path}.Key"))?,
                role,
            ));
        }
    }
    Ok(keys)
}

pub(super) fn parse_delivery(v: &Value, report: &mut LoadReport) -> Result<DeliveryConfig, Error> {
    let map = Section::as_object(v, "WebSocketServer.Delivery")?;
    let mut s = Section::new("WebSocketServer.Delivery", &map);
    let mut d = DeliveryConfig::default();
    if let Some(v) = s.take_int("AckTimeoutMs", 10, 3_600_000)? {
        d.ack_timeout = Duration::from_millis(v);
    }
    if let Some(v) = s.take_int("MaxRetries", 0, 1000)? {
        d.max_retries = v as u32;
    }
    if let Some(v) = s.take_int("SessionResumeSeconds", 0, 86_400)? {
        d.session_resume = Duration::from_secs(v);
    }
    if let Some(v) = s.take_int("SessionResumeMs", 0, 86_400_000)? {
        d.session_resume = Duration::from_millis(v);
    }
    if let Some(v) = s.take_int("ReplayBufferEvents", 1, 1_000_000)? {
        d.replay_buffer_events = v as usize;
    }
    if let Some(v) = s.take("ReliableChannels") {
        let Value::Array(items) = v else {
            return Err(Error::config(
                "WebSocketServer.Delivery.ReliableChannels",
                "must be an array of channel names",
            ));
        };
        for item in items {
            match item {
                Value::String(c) if crate::message::is_valid_name(&c) => {
                    d.reliable_channels.push(c)
                }
                other => {
                    return Err(Error::config(
                        "WebSocketServer.Delivery.ReliableChannels",
                        format!("{other} is not a channel name ([a-z0-9_.-]{{1,64}})"),
                    ));
                }
            }
        }
    }
    report.warnings.extend(s.unknown_keys());
    Ok(d)
}

pub(super) fn parse_rate_limit(
    v: &Value,
    report: &mut LoadReport,
) -> Result<RateLimitConfig, Error> {
    let map = Section::as_object(v, "WebSocketServer.RateLimit")?;
    let mut s = Section::new("WebSocketServer.RateLimit", &map);
    let mut r = RateLimitConfig::default();
    if let Some(v) = s.take_int("MessagesPerSecond", 0, 1_000_000)? {
        r.messages_per_second = v as u32;
    }
    if let Some(v) = s.take_int("Burst", 1, 1_000_000)? {
        r.burst = v as u32;
    }
    if let Some(v) = s.take_int("ViolationsBeforeBlock", 1, 1_000_000)? {
        r.violations_before_block = v as u32;
    }
    if let Some(v) = s.take_int("BlockSeconds", 0, 86_400)? {
        r.block = Duration::from_secs(v);
    }
    if let Some(v) = s.take_int("BlockMs", 0, 86_400_000)? {
        r.block = Duration::from_millis(v);
    }
    if let Some(v) = s.take_int("HandshakesPerMinutePerIp", 0, 1_000_000)? {
        r.handshakes_per_minute_per_ip = v as u32;
    }
    report.warnings.extend(s.unknown_keys());
    Ok(r)
}

pub(super) fn parse_jwt(v: &Value, report: &mut LoadReport) -> Result<JwtConfig, Error> {
    let map = Section::as_object(v, "WebSocketServer.Jwt")?;
    let mut s = Section::new("WebSocketServer.Jwt", &map);
    let mut j = JwtConfig {
        public_key_path: s.take_str("PublicKeyPath")?.map(PathBuf::from),
        jwks_path: s.take_str("JwksPath")?.map(PathBuf::from),
        ..JwtConfig::default()
    };
    if j.public_key_path.is_some() == j.jwks_path.is_some() {
        return Err(Error::config(
            "WebSocketServer.Jwt.PublicKeyPath",
            "give exactly one of PublicKeyPath and JwksPath",
        ));
    }
    j.issuer = s.take_str("Issuer")?;
    j.audience = s.take_str("Audience")?;
    if let Some(v) = s.take("Algorithms") {
        let names: Option<Vec<String>> = v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect());
        j.algorithms = names.filter(|n| !n.is_empty()).ok_or_else(|| {
            Error::config(
                "WebSocketServer.Jwt.Algorithms",
                "must be a non-empty array of names like \"RS256\"",
            )
        })?;
    }
    if let Some(v) = s.take_str("RoleClaim")? {
        j.role_claim = v;
    }
    if let Some(v) = s.take_int("LeewaySeconds", 0, 3600)? {
        j.leeway_seconds = v;
    }
    report.warnings.extend(s.unknown_keys());
    Ok(j)
}

pub(super) fn parse_level(v: &Value, key: &str) -> Result<String, Error> {
    let v = Section::as_str_value(v, key)?.unwrap_or_else(|| "info".into());
    let lower = v.to_ascii_lowercase();
    match lower.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(lower),
        _ => Err(Error::config(
            key,
            format!("{v:?}: allowed error, warn, info, debug, trace, off"),
        )),
    }
}
