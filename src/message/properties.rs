//! Property tests of message validation (proptest): any text is answered without a panic, a
//! well-formed command always parses to what was sent, a bad name is refused under the
//! command's id naming the field, and nesting is refused past `MAX_JSON_DEPTH` however deep.
#![forbid(unsafe_code)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_.-]{1,64}"
}

/// Strings that are not valid channel/action names.
fn bad_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{0,10}[A-Z /:!é][a-z]{0,10}",
        "[a-z]{65,80}",
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Shrunk failures are kept (and replayed first) beside the other tests' files.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/message_properties.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_answered_without_panic(text in ".{0,300}") {
        let _ = parse_incoming(&text);
    }

    #[test]
    fn any_json_is_answered_without_panic(v in json_value(), kind in prop::sample::select(vec!["command", "ack", "response", "status", "event", "x"])) {
        let _ = parse_incoming(&v.to_string());
        // The same value as an envelope's fields.
        if let Value::Object(mut m) = v {
            m.insert("type".into(), json!(kind));
            let _ = parse_incoming(&Value::Object(m).to_string());
        }
    }

    #[test]
    fn well_formed_commands_parse_to_what_was_sent(
        id in "[ -~]{1,128}",
        channel in name(),
        action in name(),
        data in prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..5),
        timestamp in prop::option::of("[0-9T:.Z-]{1,30}"),
    ) {
        let data = Value::Object(data.into_iter().collect());
        let mut msg = json!({"type": "command", "id": id, "channel": channel, "action": action, "data": data});
        if let Some(t) = &timestamp {
            msg["timestamp"] = json!(t);
        }
        match parse_incoming(&msg.to_string()) {
            Ok(Incoming::Command(c)) => {
                prop_assert_eq!(c.id, id);
                prop_assert_eq!(c.channel, channel);
                prop_assert_eq!(c.action, action);
                prop_assert_eq!(c.data, data);
                prop_assert_eq!(c.timestamp, timestamp);
            }
            other => prop_assert!(false, "refused: {:?}", other),
        }
    }

    #[test]
    fn bad_names_are_refused_under_the_id(id in "[a-z0-9]{1,20}", bad in bad_name(), in_channel in any::<bool>()) {
        let (channel, action) = if in_channel { (bad.clone(), "ping".to_string()) } else { ("system".to_string(), bad.clone()) };
        let msg = json!({"type": "command", "id": id, "channel": channel, "action": action});
        let e = *parse_incoming(&msg.to_string()).unwrap_err();
        prop_assert_eq!(e.error.code, ErrorCode::InvalidMessage);
        prop_assert_eq!(e.reply_to.map(|r| r.id), Some(id));
        prop_assert_eq!(&e.error.details["field"], if in_channel { "channel" } else { "action" });
    }

    #[test]
    fn nesting_is_refused_past_the_limit(depth in 0usize..400) {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let text = format!(r#"{{"type":"command","id":"n","channel":"c","action":"a","data":{{"k":{}}}}}"#,
            if depth == 0 { "0".to_string() } else { deep });
        // The envelope and data add two levels.
        let accepted = parse_incoming(&text).is_ok();
        prop_assert_eq!(accepted, depth + 2 <= MAX_JSON_DEPTH, "depth {}", depth);
    }
}
