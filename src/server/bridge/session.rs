//! One connected stretch of the bridge: presence, the request subscription, then a loop that
//! reads the broker, publishes tapped events, replies and the status object as the socket
//! takes them, pings on keep-alive, and sleeps in `poll(2)` until one of them has work. Ends
//! when the link is lost (unacknowledged events go back to the tap, to be sent again) or at
//! shutdown (offline presence, DISCONNECT).
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mqtt::packet::{
    DisconnectPacket, PingreqPacket, PubackPacket, PublishPacket, QoSWithPacketIdentifier,
    SubscribePacket, VariablePacket,
};
use mqtt::{QualityOfService, TopicFilter, TopicName};

use super::inflight::Sent;
use super::link::BrokerLink;
use super::{Bridge, End, goodbye_wait, topics};
use crate::server::runtime::threads::{Activity, ThreadTag};
use crate::server::status;
use crate::wake::{self, Interest};

/// Output waiting for the socket beyond which no more events or status are encoded: the
/// broker (or the network) is slow; the tap holds the rest.
const HIGH_WATER: usize = 64 * 1024;
/// Output waiting for the socket beyond which the bridge stops reading the broker.
const READ_STOP: usize = 4 * HIGH_WATER;
/// QoS 1 packets unacknowledged at once, events and our own together. MQTT 3.1.1 names no
/// limit, but brokers keep one per client (Mosquitto's `max_inflight_messages` is 20 by
/// default); the bridge stays below the smallest common default.
const QOS1_WINDOW: usize = 16;
/// Replies waiting for the window beyond which the bridge reads no more requests.
const MAX_WAITING_REPLIES: usize = 256;
/// Events taken from the tap per round.
const BATCH: usize = 64;

/// The timers of a connected stretch.
struct Clock {
    last_sent: Instant,
    /// When the PINGREQ waiting for its PINGRESP went out.
    ping_sent: Option<Instant>,
}

impl Bridge {
    /// Serves one link until it is lost or the server shuts down.
    pub(super) fn serve(&mut self, mut link: BrokerLink, tag: &ThreadTag) -> End {
        self.ctx
            .metrics
            .bridge
            .connects
            .fetch_add(1, Ordering::Relaxed);
        self.ctx
            .metrics
            .bridge
            .connected
            .store(true, Ordering::Relaxed);
        self.greet(&mut link);
        let end = self.serve_loop(&mut link, tag);
        self.ctx
            .metrics
            .bridge
            .connected
            .store(false, Ordering::Relaxed);
        match end {
            End::Shutdown => self.goodbye(&mut link),
            End::Closed | End::Lost(_) => self.tap.put_back(self.inflight.take_events()),
        }
        end
    }

    /// Presence online (retained), the status object at once (with StatusIntervalMs; the
    /// status thread's offers follow), and the request subscription with `Commands`.
    fn greet(&mut self, link: &mut BrokerLink) {
        let port = self.ctx.state.lock().bound.first().map(|a| a.port());
        let online = topics::online(port).to_string();
        let topic = self.topics.online.clone();
        self.publish_own(link, &topic, online, true);
        if self.ctx.config.status_interval.is_some() {
            let _older = self.desk.handle().take_status();
            let status = status::status_json(&self.ctx).to_string().into_bytes();
            self.publish_status(link, status);
        }
        if self.config.commands
            && let Ok(filter) = TopicFilter::new(self.topics.request.clone())
        {
            let pid = self.inflight.assign(Sent::Own);
            link.send(&SubscribePacket::new(
                pid,
                vec![(filter, QualityOfService::Level1)],
            ));
        }
    }

    fn serve_loop(&mut self, link: &mut BrokerLink, tag: &ThreadTag) -> End {
        let now = Instant::now();
        let mut clock = Clock {
            last_sent: now,
            ping_sent: None,
        };
        let mut packets = Vec::new();
        let mut ready = Vec::with_capacity(4);
        loop {
            if self.ctx.shutdown.is_requested() {
                return End::Shutdown;
            }
            tag.set(Activity::Running, self.ctx.uptime_ms());
            // Backpressure: while the broker does not take what we owe it (replies, say),
            // read no more requests from it.
            if link.unsent() < READ_STOP
                && self.replies.len() < MAX_WAITING_REPLIES
                && let Err(e) = link.receive(&mut packets)
            {
                return match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => End::Closed,
                    _ => End::Lost(e.to_string()),
                };
            }
            if !packets.is_empty() {
                clock.ping_sent = None;
            }
            for packet in packets.drain(..) {
                self.on_packet(link, packet);
            }
            let now = Instant::now();
            self.send_replies(link, now);
            self.send_events(link);
            self.send_status(link);
            if let Err(why) = self.keep_alive(link, &mut clock, now) {
                return End::Lost(why);
            }
            let before = link.unsent();
            if let Err(e) = link.flush() {
                return End::Lost(e.to_string());
            }
            if link.unsent() < before {
                clock.last_sent = Instant::now();
            }
            self.log_dropped();
            // With room again (the socket took the output), events that wait go now.
            let room = self.room_for_events(link);
            if room && self.tap.len() > 0 {
                continue;
            }
            tag.set(Activity::Waiting, self.ctx.uptime_ms());
            let deadline = self.next_deadline(&clock);
            // The tap only wakes us when there is room for what it holds.
            let mut interests = vec![link.interest(READ_STOP), fd(self.desk.waker().raw_fd())];
            interests.push(fd(self.ctx.shutdown.waker.raw_fd()));
            if room {
                interests.push(fd(self.tap.waker.raw_fd()));
            }
            if let Err(e) = wake::wait(&interests, deadline, &mut ready) {
                return End::Lost(format!("poll: {e}"));
            }
        }
    }

    fn next_deadline(&self, clock: &Clock) -> Option<Instant> {
        let half = self.config.keep_alive / 2;
        let ping_due = match clock.ping_sent {
            Some(sent) => sent + half,
            None => clock.last_sent + half,
        };
        wake::earliest([Some(ping_due), self.desk.next_deadline()])
    }

    /// One packet from the broker.
    fn on_packet(&mut self, link: &mut BrokerLink, packet: VariablePacket) {
        match packet {
            VariablePacket::PubackPacket(ack) => {
                let pid = ack.packet_identifier();
                if let Some(Sent::Event(_)) = self.inflight.acked(pid) {
                    self.ctx
                        .metrics
                        .bridge
                        .events_sent
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            VariablePacket::PublishPacket(publish) => self.on_publish(link, &publish),
            VariablePacket::SubackPacket(ack) => {
                self.inflight.acked(ack.packet_identifier());
                let refused = ack
                    .subscribes()
                    .iter()
                    .any(|c| matches!(c, mqtt::packet::suback::SubscribeReturnCode::Failure));
                if refused {
                    log::error!(
                        "mqtt: the broker refused the subscription to {}: no commands will arrive (check its ACL)",
                        self.topics.request
                    );
                }
            }
            _ => {}
        }
    }

    /// A message on a topic we subscribed to: a request.
    fn on_publish(&mut self, link: &mut BrokerLink, publish: &PublishPacket) {
        if let QoSWithPacketIdentifier::Level1(pid) = publish.qos() {
            link.send(&PubackPacket::new(pid));
        }
        if publish.topic_name() != self.topics.request {
            return;
        }
        self.ctx
            .metrics
            .bridge
            .commands
            .fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = self.desk.on_request(&self.ctx, publish.payload()) {
            self.replies.push_back(reply);
        }
    }

    /// Replies go first, as the QoS 1 window allows; the rest wait their turn.
    fn send_replies(&mut self, link: &mut BrokerLink, now: Instant) {
        self.replies.extend(self.desk.collect(&self.ctx, now));
        while self.inflight.len() < QOS1_WINDOW
            && let Some(reply) = self.replies.pop_front()
        {
            self.publish_own(link, &reply.topic, reply.payload, false);
        }
    }

    /// How many events may be encoded now: none while the output is over [`HIGH_WATER`] or
    /// the QoS 1 window is full.
    fn events_wanted(&self, link: &BrokerLink) -> usize {
        if link.unsent() >= HIGH_WATER {
            return 0;
        }
        match self.config.qos {
            1 => QOS1_WINDOW.saturating_sub(self.inflight.len()).min(BATCH),
            _ => BATCH,
        }
    }

    fn room_for_events(&self, link: &BrokerLink) -> bool {
        self.events_wanted(link) > 0
    }

    /// Moves tapped events to the output while the socket keeps up and the QoS 1 window has
    /// room.
    fn send_events(&mut self, link: &mut BrokerLink) {
        self.tap.waker.reset();
        let qos1 = self.config.qos == 1;
        loop {
            let wanted = self.events_wanted(link);
            if wanted == 0 {
                return;
            }
            let batch = self.tap.take(wanted);
            if batch.is_empty() {
                return;
            }
            for event in batch {
                let topic = self.topics.event(&event.channel, &event.action);
                let Ok(topic) = TopicName::new(topic) else {
                    continue;
                };
                let payload = event.body.unsequenced_text().into_bytes();
                let qos = if qos1 {
                    QoSWithPacketIdentifier::Level1(self.inflight.assign(Sent::Event(event)))
                } else {
                    self.ctx
                        .metrics
                        .bridge
                        .events_sent
                        .fetch_add(1, Ordering::Relaxed);
                    QoSWithPacketIdentifier::Level0
                };
                link.send(&PublishPacket::new(topic, qos, payload));
            }
        }
    }

    /// The newest status object the status thread offered, on `<prefix>/status`, when the
    /// socket keeps up (a slow broker gets the newest one when it catches up, never a
    /// backlog: the slot holds one).
    fn send_status(&mut self, link: &mut BrokerLink) {
        if link.unsent() >= HIGH_WATER {
            return;
        }
        if let Some(text) = self.desk.handle().take_status() {
            self.publish_status(link, text.as_bytes().to_vec());
        }
    }

    fn publish_status(&self, link: &mut BrokerLink, payload: Vec<u8>) {
        if let Ok(topic) = TopicName::new(self.topics.status.clone()) {
            let mut packet = PublishPacket::new(topic, QoSWithPacketIdentifier::Level0, payload);
            packet.set_retain(self.config.status_retain);
            link.send(&packet);
        }
    }

    /// PINGREQ after half the keep-alive without sending; the link is dead when no packet
    /// came back within another half.
    fn keep_alive(
        &mut self,
        link: &mut BrokerLink,
        clock: &mut Clock,
        now: Instant,
    ) -> Result<(), String> {
        let half = self.config.keep_alive / 2;
        match clock.ping_sent {
            Some(sent) if now >= sent + half => Err(format!("no answer to a ping within {half:?}")),
            Some(_) => Ok(()),
            None if now >= clock.last_sent + half => {
                link.send(&PingreqPacket::new());
                clock.ping_sent = Some(now);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A QoS 1 message of the bridge's own (presence, a reply).
    fn publish_own(
        &mut self,
        link: &mut BrokerLink,
        topic: &str,
        payload: String,
        retain: bool,
    ) -> Option<u16> {
        let topic = TopicName::new(topic).ok()?;
        let pid = self.inflight.assign(Sent::Own);
        let mut packet = PublishPacket::new(
            topic,
            QoSWithPacketIdentifier::Level1(pid),
            payload.into_bytes(),
        );
        packet.set_retain(retain);
        link.send(&packet);
        Some(pid)
    }

    /// At shutdown: the events published before it still go (and, at QoS 1, are
    /// acknowledged), then offline presence (retained, QoS 1) and its PUBACK, then
    /// DISCONNECT, so the broker does not publish the last will. All within one deadline.
    fn goodbye(&mut self, link: &mut BrokerLink) {
        let deadline = wake::after(goodbye_wait(&self.ctx));
        self.drain(link, deadline, true, |b| {
            b.tap.len() == 0 && b.inflight.events() == 0
        });
        let offline = topics::offline("shutdown").to_string();
        let topic = self.topics.online.clone();
        let pid = self.publish_own(link, &topic, offline, true);
        self.drain(link, deadline, false, |b| {
            !pid.is_some_and(|p| b.inflight.waits_for(p))
        });
        link.send(&DisconnectPacket::new());
        let _ = flush_by(link, deadline);
        log::info!("mqtt: disconnected from the broker (offline published)");
    }

    /// Writes, reads and waits until `done` holds or `deadline` passes (or the link fails);
    /// with `events`, keeps moving tapped events out as the window allows. It only waits
    /// after writing all it may, so acknowledgements that open the window are used at once.
    fn drain(
        &mut self,
        link: &mut BrokerLink,
        deadline: Instant,
        events: bool,
        done: impl Fn(&Self) -> bool,
    ) {
        let mut packets = Vec::new();
        let mut ready = Vec::with_capacity(1);
        loop {
            if events {
                self.send_events(link);
            }
            if link.flush().is_err() || done(self) || Instant::now() >= deadline {
                return;
            }
            let interest = [link.interest(usize::MAX)];
            if wake::wait(&interest, Some(deadline), &mut ready).is_err()
                || link.receive(&mut packets).is_err()
            {
                return;
            }
            for packet in packets.drain(..) {
                self.on_packet(link, packet);
            }
        }
    }
}

/// Flushes until the output is empty or `deadline` passes.
fn flush_by(link: &mut BrokerLink, deadline: Instant) -> std::io::Result<()> {
    let mut ready = Vec::with_capacity(1);
    link.flush()?;
    while link.unsent() > 0 && Instant::now() < deadline {
        wake::wait(
            &[link.interest(usize::MAX)],
            Some(deadline.max(Instant::now() + Duration::from_millis(1))),
            &mut ready,
        )?;
        link.flush()?;
    }
    Ok(())
}

fn fd(raw: std::os::fd::RawFd) -> Interest {
    Interest {
        fd: raw,
        read: true,
        write: false,
    }
}
