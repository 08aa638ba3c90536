//! The `Mqtt` section: the bridge of bridged channels, the status object and presence to an
//! MQTT broker (docs/behaviour.md, "MQTT bridge"). Absent: no bridge.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::reader::{Given, LoadReport, Section};
use crate::config::table::settings_table;
use crate::config::values::{Kind, SettingValue};
use crate::error::Error;
use crate::message::is_valid_name;
use crate::server::security::identity::{Role, Secret};

/// Longest `TopicPrefix`: the topics under it stay far below MQTT's 65535-byte limit.
const MAX_PREFIX_BYTES: usize = 200;

/// A broker address: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// The host name or IP literal (without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// `mqtts://`: TLS, the broker's certificate checked against the host name.
    pub tls: bool,
}

impl MqttUrl {
    /// Parses `text` (with `http::Uri`, which tungstenite brings); says what is wrong.
    pub fn parse(text: &str) -> Result<MqttUrl, String> {
        let uri: tungstenite::http::Uri = text.parse().map_err(|e| {
            format!("is not a URL ({e}): use mqtt://host:1883 or mqtts://host:8883")
        })?;
        let tls = match uri.scheme_str() {
            Some("mqtt") => false,
            Some("mqtts") => true,
            _ => return Err("needs the scheme mqtt:// or mqtts://".into()),
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if authority.contains('@') {
            return Err("carries credentials: give them as Username and Password".into());
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("has a path or query: a broker URL is mqtt://host:port".into());
        }
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("has no host".into());
        }
        Ok(MqttUrl {
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(if tls { 8883 } else { 1883 }),
            tls,
        })
    }
}

fn broker_url(s: &str) -> Result<(), String> {
    MqttUrl::parse(s).map(|_| ())
}

/// An MQTT client identifier: 1 to 64 visible ASCII characters (brokers must take 23
/// alphanumerics; Mosquitto and the others take these).
fn client_id(s: &str) -> Result<(), String> {
    if (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("must be 1 to 64 visible ASCII characters".into())
    }
}

/// A topic prefix: levels without wildcards, no leading `$` or `/`, no trailing `/`.
fn topic_prefix(s: &str) -> Result<(), String> {
    let bad_level = s
        .split('/')
        .any(|l| l.is_empty() || l.contains(['+', '#', '\0']));
    if s.len() > MAX_PREFIX_BYTES || s.starts_with('$') || bad_level {
        return Err(format!(
            "must be topic levels joined by '/', without '+', '#', a leading '$' or empty \
             levels, at most {MAX_PREFIX_BYTES} bytes"
        ));
    }
    Ok(())
}

fn any_text(_: &str) -> Result<(), String> {
    Ok(())
}

/// The machine's host name, as MQTT topic and client-id text (`board` if it has none).
fn node_name() -> String {
    let raw = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let name: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    if name.is_empty() {
        "board".into()
    } else {
        name
    }
}

/// The default client identifier: the host name and the start of `/etc/machine-id`, so that
/// two boards left with the same host name (every Raspberry Pi is `raspberrypi`) do not
/// take each other's connection at the broker.
fn default_client_id() -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let machine: String = machine
        .trim()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    let mut id = format!("hydrogen-ws-{}", node_name());
    if !machine.is_empty() {
        id.push('-');
        id.push_str(&machine);
    }
    id.chars().take(64).collect()
}

settings_table! {
    /// The `Mqtt` section: a bridge to an MQTT 3.1.1 broker (docs/behaviour.md, "MQTT
    /// bridge"). Present means on; `Url` is required.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct MqttConfig {
        /// `Url` (required): `mqtt://host:1883` or `mqtts://host:8883`.
        url: String = String::new(), "Url" => Kind::Text(broker_url);
        /// `ClientId` ("hydrogen-ws-<host name>-<first 8 of /etc/machine-id>").
        client_id: String = default_client_id(), "ClientId" => Kind::Text(client_id);
        /// `Username` (none).
        username: Option<String> = None, "Username" => Kind::Text(any_text);
        /// `Password` (none; use `${env.NAME}`). Secret: shown redacted.
        password: Option<Secret> = None, "Password" => Kind::Secret;
        /// `TopicPrefix` ("hydrogen/<host name>"): every topic of the bridge is under it.
        topic_prefix: String = format!("hydrogen/{}", node_name()), "TopicPrefix" => Kind::Text(topic_prefix);
        /// `Channels` ([]): event channels published to `<prefix>/events/<channel>/<action>`.
        channels: Vec<String> = Vec::new(),
            "Channels" => Kind::Names(is_valid_name, "channel name ([a-z0-9_.-]{1,64})");
        /// `Qos` (0): QoS of the events, 0 or 1 (status is QoS 0, presence QoS 1).
        qos: u8 = 0, "Qos" => Kind::Int(0, 1);
        /// `StatusRetain` (true): the status object on `<prefix>/status` is retained.
        status_retain: bool = true, "StatusRetain" => Kind::Flag;
        /// `Commands` (false): take commands from `<prefix>/request`.
        commands: bool = false, "Commands" => Kind::Flag;
        /// `CommandRole` ("operator"): the role of the bridge's identity (`mqtt`) for those
        /// commands. Sensitive actions are refused whatever the role (nothing signs them).
        command_role: Role = Role::Operator, "CommandRole" => Kind::Role;
        /// `KeepAliveSeconds` (30): MQTT keep-alive; the bridge pings after half of it.
        keep_alive: Duration = Duration::from_secs(30), "KeepAliveSeconds" => Kind::Secs(2, 65535);
        /// `BufferEvents` (1000): events kept for the broker while it is away or slow (and
        /// QoS 1 events not yet acknowledged); past it the oldest go, counted and logged.
        buffer_events: usize = 1000, "BufferEvents" => Kind::Int(1, 1_000_000);
        /// `ConnectTimeoutMs` (5000): TCP connect, TLS and CONNACK, each attempt.
        connect_timeout: Duration = Duration::from_millis(5000),
            "ConnectTimeoutMs" => Kind::Millis(10, 600_000);
        /// `ReconnectMaxMs` (30000): the longest wait between attempts (the client
        /// library's backoff: 100 ms doubling, 20 % jitter).
        reconnect_max: Duration = Duration::from_secs(30),
            "ReconnectMaxMs" => Kind::Millis(10, 3_600_000);
        /// `CaPath` (the system store): PEM CA certificates trusted for `mqtts://`.
        ca_path: Option<PathBuf> = None, "CaPath" => Kind::Path;
    }
}

impl MqttConfig {
    /// The parsed `Url` (checked when the config was read).
    pub fn broker(&self) -> Result<MqttUrl, Error> {
        MqttUrl::parse(&self.url).map_err(|why| Error::config("WebSocketServer.Mqtt.Url", why))
    }
}

impl SettingValue for Option<MqttConfig> {
    fn parse(given: Given, _: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        let key = given.key.clone();
        let mut section = Section::new(&key, Section::object(given.value, &key)?);
        let mut value = MqttConfig::default();
        value.read_rows(&mut section, report)?;
        report.warnings.extend(section.unknown_keys());
        if value.url.is_empty() {
            return Err(Error::config(
                format!("{key}.Url"),
                "required: the broker, e.g. \"mqtt://127.0.0.1:1883\"",
            ));
        }
        Ok(Some(value))
    }

    fn show(&self, _: &Kind) -> Value {
        match self {
            Some(m) => Value::Object(m.show_rows()),
            None => Value::Null,
        }
    }
}

impl SettingValue for Option<String> {
    fn parse(given: Given, kind: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        String::parse(given, kind, report).map(Some)
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self)
    }
}

impl SettingValue for Option<Secret> {
    fn parse(given: Given, _: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        crate::config::values::text(given).map(|s| Some(Secret::new(s)))
    }

    /// Redacted: at most the first characters.
    fn show(&self, _: &Kind) -> Value {
        json!(self.as_ref().map(Secret::redacted))
    }
}

impl SettingValue for Role {
    fn parse(given: Given, _: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        let key = given.key.clone();
        let name = crate::config::values::text(given)?;
        Role::from_name(&name).ok_or_else(|| {
            Error::config(
                key,
                format!("{name:?}: allowed viewer, operator, admin, service"),
            )
        })
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self.as_str())
    }
}

impl SettingValue for u8 {
    fn parse(given: Given, kind: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        // The table's ranges for u8 fields fit in a u8.
        u16::parse(given, kind, report).map(|n| n.min(255) as u8)
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = MqttUrl::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1884, false));
        let u = MqttUrl::parse("mqtts://broker.local").unwrap();
        assert_eq!((u.port, u.tls), (8883, true));
        assert_eq!(MqttUrl::parse("mqtt://[::1]:1883").unwrap().host, "::1");
        assert!(MqttUrl::parse("http://x").is_err());
        assert!(
            MqttUrl::parse("mqtt://u:p@x")
                .unwrap_err()
                .contains("Username")
        );
        assert!(MqttUrl::parse("mqtt://x/path").is_err());
    }

    #[test]
    fn prefixes() {
        assert!(topic_prefix("hydrogen/printer-1").is_ok());
        for bad in ["", "a//b", "a/#", "+/x", "$SYS/x", "a/"] {
            assert!(topic_prefix(bad).is_err(), "{bad}");
        }
    }
}
