//! Commands from `<prefix>/request` (with `Commands`): each one is checked and routed like a
//! WebSocket command from the bridge's identity (`mqtt`, role `CommandRole`), and its
//! response — or the same error object a WebSocket client would get — is published to the
//! command's `reply_to` topic. Handlers and services answer through the bridge's own
//! [`ConnectionHandle`], whose queue the bridge's thread drains.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_channel::Receiver;
use serde::Deserialize;

use super::topics::Topics;
use crate::message::{self, Command, ErrorCode, Incoming, ReplyTo, WireError};
use crate::server::connection::{incoming, system};
use crate::server::context::ServerContext;
use crate::server::dispatch::router;
use crate::server::events::direct;
use crate::server::events::session::RecentIds;
use crate::server::registry::handle::{ConnectionHandle, Outbound};
use crate::server::security::identity::{AuthMethod, Identity, Role};
use crate::server::security::limits::TokenBucket;
use crate::wake::{self, Waker};

/// Commands waiting for a handler or service at once; more get `rate_limited`.
const MAX_PENDING: usize = 64;

/// A message for the broker: what to publish where.
#[derive(Debug)]
pub(super) struct Reply {
    pub topic: String,
    pub payload: String,
}

/// A command routed to a handler or service, waiting for its response.
struct Waiting {
    reply_topic: String,
    to: ReplyTo,
    deadline: Instant,
    /// The id a service got it under (its answer is forgotten on timeout).
    forwarded_as: Option<String>,
}

/// What running a command did.
enum Ran {
    /// Answered at once (a `system` action): the response.
    Answered(String),
    /// Routed to a handler, or to a service under this id: the answer comes later.
    Routed(Option<String>),
}

/// The part of a request the envelope does not have.
#[derive(Deserialize)]
struct ReplyField {
    reply_to: Option<serde_json::Value>,
}

/// The bridge's side of the command path.
pub(super) struct CommandDesk {
    identity: Identity,
    handle: Arc<ConnectionHandle>,
    replies: Receiver<Outbound>,
    waiting: HashMap<String, Waiting>,
    recent: RecentIds,
    topics: Topics,
    /// RateLimit's allowance, for all requests through the bridge together.
    bucket: TokenBucket,
}

impl CommandDesk {
    /// A desk with its own connection handle (not in the registry: it is no WebSocket).
    pub(super) fn new(ctx: &ServerContext, role: Role, topics: Topics) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let peer = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let handle = ConnectionHandle::new(
            ctx.next_connection_id(),
            peer,
            Weak::new(),
            tx,
            Waker::new()?,
        );
        Ok(CommandDesk {
            identity: Identity {
                name: "mqtt".into(),
                role,
                method: AuthMethod::Bridge,
            },
            handle: Arc::new(handle),
            replies: rx,
            waiting: HashMap::new(),
            recent: RecentIds::default(),
            topics,
            bucket: TokenBucket::new(ctx.limits.config()),
        })
    }

    /// The descriptor that becomes readable when a response is queued (or the status
    /// thread offers the status object).
    pub(super) fn waker(&self) -> &Waker {
        &self.handle.waker
    }

    /// The bridge's connection handle: responses come back through it, and the status
    /// object waits in its status slot.
    pub(super) fn handle(&self) -> &Arc<ConnectionHandle> {
        &self.handle
    }

    /// Handles one request; returns what to publish at once (a `system` answer, an error),
    /// or nothing when a handler or service will answer later.
    pub(super) fn on_request(&mut self, ctx: &ServerContext, payload: &[u8]) -> Option<Reply> {
        let limit = ctx.config.max_message_size;
        let text = match std::str::from_utf8(payload) {
            _ if payload.len() > limit => {
                let why = format!(
                    "request of {} bytes; at most {limit} (MaxMessageSize)",
                    payload.len()
                );
                return Some(self.to_errors(None, &WireError::new(ErrorCode::InvalidMessage, why)));
            }
            Ok(t) => t,
            Err(_) => {
                let why = "request is not UTF-8 text";
                return Some(self.to_errors(None, &WireError::new(ErrorCode::InvalidMessage, why)));
            }
        };
        if !self.bucket.take(Instant::now()) {
            let limits = ctx.limits.config();
            let why = format!(
                "over {} requests per second (burst {}): request dropped; slow down",
                limits.messages_per_second, limits.burst
            );
            return Some(self.to_errors(None, &WireError::new(ErrorCode::RateLimited, why)));
        }
        let incoming = message::parse_incoming(text);
        let reply_topic = serde_json::from_str::<ReplyField>(text)
            .ok()
            .and_then(|f| f.reply_to)
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|t| self.topics.reply_topic_ok(t));
        let cmd = match incoming {
            Ok(Incoming::Command(cmd)) => cmd,
            Ok(_) => {
                let err = WireError::new(ErrorCode::InvalidMessage, "a request must be a command");
                return Some(self.reply(reply_topic, None, &err));
            }
            Err(invalid) => {
                return Some(self.reply(reply_topic, invalid.reply_to.as_ref(), &invalid.error));
            }
        };
        let to = ReplyTo::from(&cmd);
        let Some(topic) = reply_topic else {
            let why =
                "a request needs \"reply_to\": a topic name without wildcards for the response";
            let err = WireError::new(ErrorCode::InvalidMessage, why)
                .with_details(serde_json::json!({"field": "reply_to"}));
            return Some(self.to_errors(Some(&to), &err));
        };
        match self.run(ctx, cmd) {
            Ok(Ran::Answered(text)) => Some(Reply {
                topic,
                payload: text,
            }),
            Ok(Ran::Routed(forwarded_as)) => {
                let deadline = wake::after(ctx.config.handler_timeout);
                let reply_topic = topic;
                let waiting = Waiting {
                    reply_topic,
                    to: to.clone(),
                    deadline,
                    forwarded_as,
                };
                self.waiting.insert(to.id, waiting);
                None
            }
            Err(err) => Some(Reply {
                topic,
                payload: message::response_error(&to, &err),
            }),
        }
    }

    /// Checks and runs `cmd` (the checks of a WebSocket command, in the same order). Errors
    /// go back under the command's id.
    fn run(&mut self, ctx: &ServerContext, cmd: Command) -> Result<Ran, WireError> {
        // An id still waiting for its handler is taken too: its reply is found by it.
        let seen_before = self.recent.seen_before(&cmd.id) || self.waiting.contains_key(&cmd.id);
        incoming::check_command(ctx, &self.identity, &cmd, seen_before, "this bridge")?;
        let to = ReplyTo::from(&cmd);
        if cmd.channel == "system" {
            let answer = system::answer(ctx, &self.handle, &self.identity, None, &cmd);
            direct::flush_corked(&mut self.handle.corked.lock());
            return Ok(Ran::Answered(match answer {
                Ok(data) => message::response_ok(&to, &data),
                Err(err) => message::response_error(&to, &err),
            }));
        }
        if self.waiting.len() >= MAX_PENDING {
            let why = format!(
                "{MAX_PENDING} commands already wait for a handler; wait for their responses"
            );
            return Err(WireError::new(ErrorCode::RateLimited, why));
        }
        router::route(
            &ctx.dispatch,
            &ctx.services,
            &self.handle,
            &self.identity,
            cmd,
        )
        .map(Ran::Routed)
    }

    /// The responses handlers and services queued since the last call, and `timeout` for
    /// those past HandlerTimeoutMs.
    pub(super) fn collect(&mut self, ctx: &ServerContext, now: Instant) -> Vec<Reply> {
        self.handle.waker.reset();
        let mut out = Vec::new();
        while let Ok(msg) = self.replies.try_recv() {
            self.handle.took_one();
            if let Outbound::Reply { id, text } = msg
                && let Some(w) = self.waiting.remove(&id)
            {
                out.push(Reply {
                    topic: w.reply_topic,
                    payload: text,
                });
            }
        }
        let expired: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(w) = self.waiting.remove(&id) {
                if let Some(fwd) = &w.forwarded_as {
                    ctx.services.forget(fwd);
                }
                let why = format!(
                    "no response from the {} handler within {:?}",
                    w.to.channel, ctx.config.handler_timeout
                );
                let err = WireError::new(ErrorCode::Timeout, why);
                out.push(Reply {
                    topic: w.reply_topic,
                    payload: message::response_error(&w.to, &err),
                });
            }
        }
        out
    }

    /// When the first waiting command times out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().map(|w| w.deadline).min()
    }

    /// An error for `reply_topic` when the request named one, else for `<prefix>/errors`.
    fn reply(&self, reply_topic: Option<String>, to: Option<&ReplyTo>, err: &WireError) -> Reply {
        match reply_topic {
            Some(topic) => Reply {
                topic,
                payload: message::error_reply(to, err),
            },
            None => self.to_errors(to, err),
        }
    }

    fn to_errors(&self, to: Option<&ReplyTo>, err: &WireError) -> Reply {
        Reply {
            topic: self.topics.errors.clone(),
            payload: message::error_reply(to, err),
        }
    }
}
