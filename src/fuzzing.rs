//! Entry points for the fuzz targets in `tests/fuzz` (feature `fuzzing`; not a public API).
#![forbid(unsafe_code)]

use crate::message::{self, Incoming, ReplyTo};

/// Reads one client message the way a connection does, and builds the reply the server would
/// send for it: a response to a command, an error for anything invalid. Panics (a crash for
/// the fuzzer) if the reply is not a JSON object.
pub fn envelope(text: &str) {
    let reply = match message::parse_incoming(text) {
        Ok(Incoming::Command(c)) => Some(message::response_ok(&ReplyTo::from(&c), &c.data)),
        Ok(Incoming::Response(r)) => r.result.err().map(|e| message::bare_error(&e)),
        Ok(Incoming::Ack { .. } | Incoming::LegacyStatus) => None,
        Err(invalid) => Some(message::error_reply(
            invalid.reply_to.as_ref(),
            &invalid.error,
        )),
    };
    if let Some(reply) = reply {
        let v: serde_json::Value = serde_json::from_str(&reply).expect("replies are valid JSON");
        assert!(v.is_object(), "replies are JSON objects: {reply}");
    }
}

/// Bytes from a hostile client through the permessage-deflate layer, fed in pieces the first
/// byte chooses, with and without context takeover. Panics (a crash) if a frame the layer
/// hands on before tungstenite's size check stops it has a payload over MaxMessageSize, and
/// if a message it deflates does not inflate back to itself.
pub fn deflate(data: &[u8]) {
    use crate::deflate::{Deflate, Params, Settings};
    use tungstenite::protocol::frame::FrameHeader;
    const MAX: usize = 64 * 1024;
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    // As negotiation guarantees: our context is kept only with the full window.
    let own_context = knobs & 0x40 != 0;
    let params = Params {
        own_window_bits: if own_context { 15 } else { 9 + (knobs % 7) },
        own_context_takeover: own_context,
        peer_context_takeover: knobs & 0x80 != 0,
    };
    let settings = Settings {
        min_size: 0,
        ..Settings::default()
    };
    let mut inbound = Deflate::new(params, &settings, MAX);
    let step = 1 + (knobs as usize % 31);
    let mut handed = Vec::new();
    let mut buf = [0u8; 4096];
    for piece in input.chunks(step) {
        inbound.take_input(piece);
        loop {
            let n = inbound.read_ready(&mut buf);
            if n == 0 {
                break;
            }
            handed.extend_from_slice(&buf[..n]);
        }
    }
    let mut cursor = std::io::Cursor::new(&handed[..]);
    while let Ok(Some((_, len))) = FrameHeader::parse(&mut cursor) {
        let at = cursor.position() as usize;
        if len as usize > MAX {
            // Our refusal of a bomb, or a client's own oversized header passed through:
            // tungstenite stops at this header (1009), so nothing after it is read.
            break;
        }
        cursor.set_position((at + len as usize).min(handed.len()) as u64);
    }
    // What we deflate inflates back to itself.
    let mut out = Deflate::new(params, &settings, MAX);
    let mut back = Deflate::new(
        Params {
            own_window_bits: 15,
            own_context_takeover: false,
            peer_context_takeover: params.own_context_takeover,
        },
        &settings,
        MAX,
    );
    let text = &input[..input.len().min(MAX)];
    let header = FrameHeader {
        opcode: tungstenite::protocol::frame::coding::OpCode::Data(
            tungstenite::protocol::frame::coding::Data::Binary,
        ),
        ..FrameHeader::default()
    };
    let mut frame = Vec::new();
    header
        .format(text.len() as u64, &mut frame)
        .expect("into a Vec");
    frame.extend_from_slice(text);
    out.take_output(&frame);
    back.take_input(out.output());
    let mut plain = vec![0u8; frame.len() + 16];
    let n = back.read_ready(&mut plain);
    assert_eq!(
        &plain[..n],
        &frame[..],
        "deflate then inflate changed the message"
    );
}

/// Bytes from a hostile MQTT broker, fed to the bridge's packet framing and decoder (the
/// `mqtt-protocol` crate) in pieces the first byte chooses, with a 4 KiB packet limit. Any
/// panic, in our framing or in the codec, is a crash.
pub fn mqtt_packets(data: &[u8]) {
    const MAX: usize = 4096;
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let step = 1 + (knob as usize % 64);
    let mut buffer = Vec::new();
    let mut packets = Vec::new();
    for piece in input.chunks(step) {
        buffer.extend_from_slice(piece);
        if crate::server::fuzzing_mqtt_decode(&mut buffer, MAX, &mut packets).is_err() {
            return; // the link would be dropped here
        }
        assert!(
            buffer.len() <= input.len(),
            "the buffer only holds what came"
        );
    }
}
