//! A hostile MQTT broker's bytes through the bridge's packet framing and the `mqtt-protocol`
//! decoder, in pieces. Any panic is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hydrogen_ws::fuzzing::mqtt_packets(data);
});
