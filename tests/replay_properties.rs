//! Property test of the session replay buffer (proptest), against a real server over real
//! sockets: for any interleaving of publish (reliable or not), read, ack, abrupt disconnect and
//! resume, the client ends up with every published event, each under exactly one `seq`, and
//! no `seq` ever carries two different events.

mod support;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use hydrogen_ws::{Event, Server};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;
use tungstenite::Message;

#[derive(Debug, Clone)]
enum Op {
    Publish { reliable: bool },
    Read,
    Ack,
    Disconnect,
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(|reliable| Op::Publish { reliable }),
        2 => Just(Op::Read),
        2 => Just(Op::Ack),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Resume),
    ]
}

/// Fields drop in order: the client goes before the server, whose shutdown would otherwise
/// wait CloseWaitMs for a close reply nobody reads.
struct Harness {
    ws: Option<TestSocket>,
    server: Server,
    session_id: String,
    /// seq → event number (`data.n`).
    received: BTreeMap<u64, u64>,
    /// Reliable event ids received and not acked yet.
    unacked: Vec<String>,
    published: u64,
}

/// How long a `Read` waits for more frames.
const READ_QUIET: Duration = Duration::from_millis(5);

impl Harness {
    fn new() -> Harness {
        let server = start_with(|c| {
            // No redelivery by timer during a case: what arrives twice comes from a resume.
            c.delivery.ack_timeout = Duration::from_secs(60);
        });
        let (mut ws, welcome) = connect_with_welcome(server.bound_addr(), Some(VIEWER_KEY));
        request_ok(
            &mut ws,
            "sub",
            "system",
            "subscribe",
            json!({"channels": ["p"]}),
        );
        ws.get_mut().set_read_timeout(Some(READ_QUIET)).unwrap();
        Harness {
            server,
            ws: Some(ws),
            session_id: welcome["session_id"].as_str().unwrap().to_owned(),
            received: BTreeMap::new(),
            unacked: Vec::new(),
            published: 0,
        }
    }

    /// Everything below this arrived without a hole: what a resume says it has.
    fn watermark(&self) -> u64 {
        let mut w = 0;
        while self.received.contains_key(&(w + 1)) {
            w += 1;
        }
        w
    }

    fn note_event(&mut self, v: &Value) -> Result<(), TestCaseError> {
        let seq = v["seq"].as_u64().unwrap();
        let n = v["data"]["n"].as_u64().unwrap();
        if let Some(&before) = self.received.get(&seq) {
            prop_assert_eq!(before, n, "seq {} carried two different events", seq);
        } else {
            self.received.insert(seq, n);
        }
        if v["ack"] == true {
            self.unacked.push(v["id"].as_str().unwrap().to_owned());
        }
        Ok(())
    }

    /// Reads whatever has arrived, until the socket is quiet for READ_QUIET.
    fn read(&mut self) -> Result<(), TestCaseError> {
        let Some(ws) = self.ws.as_mut() else {
            return Ok(());
        };
        let mut events = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "event" && v["channel"] == "p" {
                        events.push(v);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    break;
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
        for v in &events {
            self.note_event(v)?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Publish { reliable } => {
                let mut event = Event::new("p", "e", json!({"n": self.published}));
                if *reliable {
                    event = event.reliable();
                }
                let subscribers = self.server.publisher().publish_event(event).unwrap();
                prop_assert_eq!(subscribers, 1);
                self.published += 1;
            }
            Op::Read => self.read()?,
            Op::Ack => {
                if let (Some(ws), false) = (self.ws.as_mut(), self.unacked.is_empty()) {
                    let id = self.unacked.remove(0);
                    send(ws, &json!({"type": "ack", "id": id}).to_string());
                }
            }
            Op::Disconnect => {
                // No close frame: the TCP connection just ends.
                self.ws = None;
                self.unacked.clear();
            }
            Op::Resume => {
                if self.ws.is_some() {
                    return Ok(());
                }
                let (mut ws, _) = connect_with_welcome(self.server.bound_addr(), Some(VIEWER_KEY));
                let last_seq = self.watermark();
                send(
                    &mut ws,
                    &command(
                        "resume",
                        "system",
                        "resume",
                        json!({"session_id": self.session_id, "last_seq": last_seq}),
                    ),
                );
                let response = recv_json(&mut ws);
                prop_assert_eq!(&response["id"], "resume");
                prop_assert_eq!(&response["data"]["resumed"], true, "{}", response);
                ws.get_mut().set_read_timeout(Some(READ_QUIET)).unwrap();
                self.ws = Some(ws);
            }
        }
        Ok(())
    }

    /// Reconnects if needed and reads until every published event has arrived.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.apply(&Op::Resume)?;
        let deadline = Instant::now() + WAIT;
        while (self.received.len() as u64) < self.published {
            prop_assert!(
                Instant::now() < deadline,
                "events missing: got seqs {:?} of {} published",
                self.received.keys().collect::<Vec<_>>(),
                self.published
            );
            self.read()?;
        }
        let seqs: Vec<u64> = self.received.keys().copied().collect();
        let expected: Vec<u64> = (1..=self.published).collect();
        prop_assert_eq!(seqs, expected, "every seq once, without holes");
        let mut ns: Vec<u64> = self.received.values().copied().collect();
        ns.sort_unstable();
        let all: Vec<u64> = (0..self.published).collect();
        prop_assert_eq!(ns, all, "every event under exactly one seq");
        Ok(())
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/replay_properties.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_event_arrives_once_per_seq_whatever_the_interleaving(ops in prop::collection::vec(op(), 1..30)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op)?;
        }
        h.finish()?;
    }
}
