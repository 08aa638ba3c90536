use std::time::Duration;

use super::*;

#[test]
fn defaults_match_spec() {
    let (c, r) = Config::from_json_str("{}").unwrap();
    assert_eq!(c.port, 5001);
    assert_eq!(c.port_fallback_count, 10);
    assert_eq!(c.max_message_size, 65536);
    assert_eq!(c.thread_stack_size, 262144);
    assert!(r.warnings.is_empty());
}

#[test]
fn errors_name_key_and_range() {
    let e = Config::from_json_str(r#"{"WebSocketServer":{"Port":70000}}"#).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("WebSocketServer.Port") && msg.contains("70000") && msg.contains("65535"),
        "{msg}"
    );
    let e = Config::from_json_str(r#"{"WebSocketServer":{"Enabled":"yes"}}"#).unwrap_err();
    assert!(e.to_string().contains("WebSocketServer.Enabled"));
}

#[test]
fn env_substitution_types_and_unset() {
    // SAFETY: unit tests in this module are the only users of these variable names.
    unsafe {
        std::env::set_var("HWS_TEST_PORT", "6001");
        std::env::set_var("HWS_TEST_BOOL", "false");
        std::env::remove_var("HWS_TEST_UNSET");
    }
    let (c, _) = Config::from_json_str(
        r#"{"WebSocketServer":{"Port":"${env.HWS_TEST_PORT}","RequireProtocol":"${env.HWS_TEST_BOOL}",
            "MaxConnections":"${env.HWS_TEST_UNSET}"}}"#,
    )
    .unwrap();
    assert_eq!(c.port, 6001);
    assert!(!c.require_protocol);
    assert_eq!(c.max_connections, 100);
}

#[test]
fn aliases_and_unknown_keys() {
    let (c, r) = Config::from_json_str(
        r#"{"Other":{},"WebSocketServer":{"Bogus":1,"ConnectionTimeouts":{"ShutdownWaitSeconds":3,"ExitWaitSeconds":7}}}"#,
    )
    .unwrap();
    assert_eq!(c.close_wait, Duration::from_secs(3));
    assert_eq!(c.join_timeout, Duration::from_secs(7));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("WebSocketServer.Bogus")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn silent_spec_choices() {
    // SAFETY: unit tests in this module are the only users of these variable names.
    unsafe { std::env::remove_var("HWS_TEST_UNSET_KEY") };
    let (c, r) = Config::from_json_str(
        r#"{"WebSocketServer":{"IdleTimeoutMs":250,"Keys":[{"Name":"a","Key":"${env.HWS_TEST_UNSET_KEY}","Role":"viewer"}],
            "SessionTokens":{"PrivateKeyPath":"x","Bogus":1}}}"#,
    )
    .unwrap();
    assert_eq!(c.idle_timeout, Some(Duration::from_millis(250)));
    assert!(
        c.keys.iter().all(|k| k.name != "a"),
        "a key from an unset variable is skipped"
    );
    assert!(r.warnings.iter().any(|w| w.contains("SessionTokens.Bogus")));
    let (c, _) =
        Config::from_json_str(r#"{"WebSocketServer":{"SecureMode":"tls","Key":"k"}}"#).unwrap();
    let e = c.validate().unwrap_err();
    assert!(e.to_string().contains("CertificatePath"), "{e}");
}

#[test]
fn missing_key_refuses_with_instructions() {
    let mut c = Config::default();
    c.keys.clear();
    let msg = c.validate().unwrap_err().to_string();
    assert!(
        msg.contains("HYDROGEN_API_KEY") && msg.contains("export"),
        "{msg}"
    );
}

#[test]
fn every_row_reads_back_what_it_shows() {
    // The redacted view of a config with every optional part set, read back, shows the
    // same: each row of the settings table parses what it prints (kind and type agree).
    let text = r#"{"WebSocketServer":{"SecureMode":"tls","CertificatePath":"c.pem","KeyPath":"k.pem",
        "IdleTimeout":0,"StatusIntervalMs":0,"Keys":[{"Name":"a","Key":"a-long-key-0123456789","Role":"operator"}],
        "Jwt":{"PublicKeyPath":"p.pem","Issuer":"i"},"SessionTokens":{"PrivateKeyPath":"s.pem"},
        "Delivery":{"ReliableChannels":["print"]},"RateLimit":{"Burst":7},"LogLevel":"DEBUG"}}"#;
    let (c, r) = Config::from_json_str(text).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let mut shown = c.to_redacted_json();
    shown["WebSocketServer"]["Keys"] = serde_json::json!([]);
    let (again, r) = Config::from_json_str(&shown.to_string()).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(again.to_redacted_json(), shown);
    assert_eq!(again.log_level, "debug");
    assert_eq!(again.rate_limit.burst, 7);
    assert!(!c.to_redacted_json().to_string().contains("0123456789"));
}

#[test]
fn aliases_yield_to_our_own_names_and_test_keys_override() {
    let (c, _) = Config::from_json_str(
        r#"{"WebSocketServer":{"ConnectionTimeouts":{"ShutdownWaitSeconds":3},"ShutdownTimeouts":{"CloseWaitMs":250},
            "RateLimit":{"BlockSeconds":9,"BlockMs":1500}}}"#,
    )
    .unwrap();
    assert_eq!(c.close_wait, Duration::from_millis(250));
    assert_eq!(c.rate_limit.block, Duration::from_millis(1500));
    let e = Config::from_json_str(r#"{"WebSocketServer":{"ShutdownTimeouts":{"JoinMs":-1}}}"#)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("WebSocketServer.ShutdownTimeouts.JoinMs"),
        "{e}"
    );
}

#[test]
fn unknown_keys_suggest_the_nearest_known_one_and_types_are_named() {
    let (_, r) = Config::from_json_str(
        r#"{"WebSocketServer":{"MaxConection":5,"RateLimit":{"Brust":3},"Zzzzzz":1}}"#,
    )
    .unwrap();
    let all = r.warnings.join("\n");
    assert!(
        all.contains("MaxConection ignored; did you mean MaxConnections?"),
        "{all}"
    );
    assert!(
        all.contains("RateLimit.Brust ignored; did you mean Burst?"),
        "{all}"
    );
    assert!(
        all.contains("WebSocketServer.Zzzzzz ignored") && !all.contains("Zzzzzz ignored;"),
        "{all}"
    );
    let e = Config::from_json_str(r#"{"WebSocketServer":{"Port":"abc"}}"#).unwrap_err();
    assert!(e.to_string().contains("wrong type"), "{e}");
}

#[test]
fn the_mqtt_section_is_read_checked_and_its_password_redacted() {
    let (c, r) = Config::from_json_str(
        r#"{"WebSocketServer":{"Mqtt":{"Url":"mqtt://10.0.0.5","Password":"broker-password-123",
            "Username":"board","Channels":["print"],"Qos":1,"CommandRole":"viewer"}}}"#,
    )
    .unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let m = c.mqtt.as_ref().expect("Mqtt section read");
    assert_eq!((m.qos, m.command_role), (1, crate::Role::Viewer));
    assert_eq!(m.broker().unwrap().port, 1883);
    assert!(m.topic_prefix.starts_with("hydrogen/") && m.client_id.starts_with("hydrogen-ws-"));
    let shown = c.to_redacted_json().to_string();
    assert!(!shown.contains("broker-password-123"), "{shown}");
    assert!(shown.contains("\"Username\":\"board\""), "{shown}");
    let (off, _) = Config::from_json_str("{}").unwrap();
    assert!(off.mqtt.is_none(), "no section, no bridge");
    let missing = Config::from_json_str(r#"{"WebSocketServer":{"Mqtt":{}}}"#).unwrap_err();
    assert!(
        missing.to_string().contains("WebSocketServer.Mqtt.Url"),
        "{missing}"
    );
    let bad = Config::from_json_str(r#"{"WebSocketServer":{"Mqtt":{"Url":"mqtt://h","Qos":2}}}"#);
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("WebSocketServer.Mqtt.Qos")
    );
    let wild = r#"{"WebSocketServer":{"Mqtt":{"Url":"mqtt://h","TopicPrefix":"a/#"}}}"#;
    assert!(Config::from_json_str(wild).is_err());
}
