//! `EchoMode` (for the Autobahn testsuite, `make hardening`): text and binary messages come back
//! as they are through the real connection code; authentication still applies.

mod support;

use support::*;
use tungstenite::Message;

#[test]
fn echo_mode_sends_text_and_binary_back_through_the_connection() {
    let server = start_with(|c| c.echo_mode = true);
    // No welcome event either: an echo peer gets nothing but its own messages.
    let mut ws = try_connect(server.bound_addr(), Some(VIEWER_KEY), "/", Some(PROTOCOL)).unwrap();
    ws.send(Message::Text("not even JSON".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("not even JSON".into()));
    let blob: Vec<u8> = (0..=255).collect();
    ws.send(Message::Binary(blob.clone().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Binary(blob.into()));
    // Unauthenticated clients still only get to authenticate.
    let mut anon = try_connect(server.bound_addr(), None, "/", Some(PROTOCOL)).unwrap();
    anon.send(Message::Text("hello".into())).unwrap();
    let reply = recv_json(&mut anon);
    assert_eq!(reply["error"]["code"], "auth_failed", "{reply}");
}
