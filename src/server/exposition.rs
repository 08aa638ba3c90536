//! `GET /metrics`: the server's figures in Prometheus's text format (version 0.0.4), encoded
//! by the `prometheus-client` crate from one snapshot per scrape (docs/behaviour.md,
//! "Metrics"). Names follow Prometheus's conventions: `hydrogen_ws_` prefix, base units,
//! `_total` on counters.
#![forbid(unsafe_code)]

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::server::context::ServerContext;
use crate::server::registry::histogram::HistogramSnapshot;
use crate::server::registry::state::ConnState;
use crate::server::status::status_object;
use crate::server::status_types::Status;

/// The `Content-Type` of the answer.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition text of the server's figures now.
pub(crate) fn render(ctx: &ServerContext) -> String {
    let scrape = Scrape {
        status: status_object(ctx),
        publish_to_write: ctx.metrics.publish_to_write.snapshot(),
        command_duration: ctx.metrics.command_duration.snapshot(),
        open_descriptors: open_descriptors(),
        resumed: ctx
            .events
            .metrics
            .resumed
            .load(std::sync::atomic::Ordering::Relaxed),
        resume_gaps: ctx
            .events
            .metrics
            .resume_gaps
            .load(std::sync::atomic::Ordering::Relaxed),
    };
    let mut registry = Registry::with_prefix("hydrogen_ws");
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// Entries of `/proc/self/fd`: the descriptors the process holds.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Everything one scrape reports, read once.
#[derive(Debug)]
struct Scrape {
    status: Status,
    publish_to_write: HistogramSnapshot,
    command_duration: HistogramSnapshot,
    open_descriptors: u64,
    resumed: u64,
    resume_gaps: u64,
}

/// Encodes one metric family: a descriptor, then one sample per label value (none: a single
/// unlabelled sample).
struct Family<'e, 'w> {
    encoder: &'e mut DescriptorEncoder<'w>,
}

impl Family<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, v: u64) -> fmt::Result {
        let c = ConstCounter::new(v);
        let m = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), c.metric_type())?;
        c.encode(m)
    }

    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, v: i64) -> fmt::Result {
        let g = ConstGauge::new(v);
        let m = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), g.metric_type())?;
        g.encode(m)
    }

    fn labelled(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        label: &'static str,
        values: &[(String, u64)],
    ) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (value, n) in values {
            let labels = [(label, value.as_str())];
            let sample = m.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(*n).encode(sample)?,
                _ => ConstGauge::new(*n as i64).encode(sample)?,
            }
        }
        Ok(())
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Family {
            encoder: &mut encoder,
        };
        self.connections(&mut f)?;
        self.traffic(&mut f)?;
        self.events(&mut f)?;
        self.bridge(&mut f)?;
        self.process(&mut f)
    }
}

impl Scrape {
    fn connections(&self, f: &mut Family) -> fmt::Result {
        let s = &self.status;
        let by_state = |terminal: bool| -> Vec<(String, u64)> {
            ConnState::ALL
                .iter()
                .filter(|st| st.is_terminal() == terminal)
                .map(|st| {
                    let n = s
                        .connections_by_state
                        .get(st.as_str())
                        .copied()
                        .unwrap_or(0);
                    (st.as_str().to_string(), n as u64)
                })
                .collect()
        };
        f.labelled(
            "connections",
            "Connections now, by state.",
            MetricType::Gauge,
            "state",
            &by_state(false),
        )?;
        f.labelled(
            "connections_ended",
            "Connections that ended, by final state.",
            MetricType::Counter,
            "state",
            &by_state(true),
        )?;
        f.counter(
            "upgrades",
            "Handshakes that ended in a WebSocket connection (refused ones: rejections).",
            None,
            s.total_connections,
        )?;
        let rejected: Vec<(String, u64)> =
            s.rejected.iter().map(|(k, v)| (k.clone(), *v)).collect();
        f.labelled(
            "rejections",
            "Connections refused, by reason (the error code or handshake failure).",
            MetricType::Counter,
            "reason",
            &rejected,
        )?;
        f.gauge(
            "blocked_addresses",
            "Client addresses blocked now (RateLimit).",
            None,
            s.blocked_addresses as i64,
        )
    }

    fn traffic(&self, f: &mut Family) -> fmt::Result {
        let s = &self.status;
        f.counter(
            "messages_received",
            "Messages received from clients.",
            None,
            s.messages_in,
        )?;
        f.counter(
            "messages_sent",
            "Messages sent to clients.",
            None,
            s.messages_out,
        )?;
        f.counter(
            "received",
            "Message payload received from clients.",
            Some(Unit::Bytes),
            s.bytes_in,
        )?;
        f.counter(
            "sent",
            "Message payload sent to clients.",
            Some(Unit::Bytes),
            s.bytes_out,
        )?;
        f.counter("requests", "Commands received.", None, s.total_requests)?;
        f.histogram(
            "command_duration",
            "Time application handlers took per command.",
            &self.command_duration,
        )
    }

    fn events(&self, f: &mut Family) -> fmt::Result {
        let e = &self.status.events;
        f.counter(
            "events_published",
            "Events published.",
            None,
            e.events_published,
        )?;
        f.counter(
            "events_delivered",
            "Events written to subscribers (redeliveries included).",
            None,
            e.events_delivered,
        )?;
        f.counter(
            "events_redelivered",
            "Reliable events sent again after no ack.",
            None,
            e.events_redelivered,
        )?;
        f.counter(
            "events_dropped",
            "Events dropped for subscribers that were too slow (kept for a resume).",
            None,
            e.events_dropped,
        )?;
        f.counter(
            "slow_client_closes",
            "Connections closed 1013 for falling behind.",
            None,
            e.slow_client_closes,
        )?;
        let sessions = [
            ("attached".to_string(), e.sessions_attached as u64),
            ("detached".to_string(), e.sessions_detached as u64),
        ];
        f.labelled(
            "sessions",
            "Event sessions now (detached ones wait for a resume).",
            MetricType::Gauge,
            "state",
            &sessions,
        )?;
        let resumes = [
            ("replayed".to_string(), self.resumed),
            ("gap".to_string(), self.resume_gaps),
        ];
        f.labelled(
            "resumes",
            "Session resumes, by result (gap: events were no longer buffered).",
            MetricType::Counter,
            "result",
            &resumes,
        )?;
        f.histogram(
            "publish_to_write",
            "From an event's publication to its write to a subscriber's socket.",
            &self.publish_to_write,
        )
    }

    /// The MQTT bridge's families, only when it runs.
    fn bridge(&self, f: &mut Family) -> fmt::Result {
        let Some(m) = &self.status.mqtt else {
            return Ok(());
        };
        f.gauge(
            "mqtt_connected",
            "1 while the bridge is connected to the MQTT broker.",
            None,
            i64::from(m.connected),
        )?;
        f.counter(
            "mqtt_connects",
            "Connections made to the MQTT broker.",
            None,
            m.connects,
        )?;
        let events = [
            ("sent".to_string(), m.events_sent),
            ("dropped".to_string(), m.events_dropped),
        ];
        f.labelled(
            "mqtt_events",
            "Events for the MQTT broker, by result (dropped: more than BufferEvents waited).",
            MetricType::Counter,
            "result",
            &events,
        )?;
        f.gauge(
            "mqtt_buffered_events",
            "Events waiting for the MQTT broker.",
            None,
            m.events_buffered as i64,
        )?;
        f.counter(
            "mqtt_commands",
            "Requests received on the MQTT request topic.",
            None,
            m.commands,
        )
    }

    fn process(&self, f: &mut Family) -> fmt::Result {
        let p = &self.status.status;
        f.gauge(
            "threads",
            "Threads of the process.",
            None,
            p.total_threads as i64,
        )?;
        f.gauge(
            "resident_memory",
            "Resident memory of the process.",
            Some(Unit::Bytes),
            p.total_resident_memory_bytes as i64,
        )?;
        f.gauge(
            "open_descriptors",
            "File descriptors the process holds.",
            None,
            self.open_descriptors as i64,
        )?;
        f.gauge(
            "uptime",
            "Time since the server started.",
            Some(Unit::Seconds),
            (self.status.uptime_ms / 1000) as i64,
        )
    }
}
