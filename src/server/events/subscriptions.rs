//! `system/subscribe` and `system/unsubscribe`: a session's channel and action filters, and the
//! channel → sessions index the fan-out reads.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::MAX_ACTIONS_PER_CHANNEL;
use crate::message::{ErrorCode, WireError, is_valid_name};
use crate::server::events::bus::EventBus;
use crate::server::events::session::{Session, SessionState};

impl EventBus {
    /// Adds channels (with an optional action filter); returns the full subscription set.
    /// A request that would take the session past `max_channels` channels (or a filter past
    /// [`MAX_ACTIONS_PER_CHANNEL`] actions) changes nothing and gets `invalid_message`.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        data: &Value,
        max_channels: usize,
    ) -> Result<Value, WireError> {
        let (channels, actions) = parse_subscription(data)?;
        let mut st = session.state.lock();
        check_limits(&st, &channels, actions.as_ref(), max_channels)?;
        let mut index = self.by_channel.write();
        for c in channels {
            let entry = st
                .subscriptions
                .entry(c.clone())
                .or_insert_with(|| Some(BTreeSet::new()));
            match (&actions, entry.as_mut()) {
                (None, _) => *entry = None,
                (Some(new), Some(existing)) => existing.extend(new.iter().cloned()),
                (Some(_), None) => {} // already every action
            }
            index.add(c, session);
        }
        Ok(st.subscription_set())
    }

    /// Removes channels (or only some actions of them); returns the full subscription set.
    pub(crate) fn unsubscribe(
        &self,
        session: &Arc<Session>,
        data: &Value,
    ) -> Result<Value, WireError> {
        let (channels, actions) = parse_subscription(data)?;
        let mut st = session.state.lock();
        let mut index = self.by_channel.write();
        for c in channels {
            let remove = match (&actions, st.subscriptions.get_mut(&c)) {
                (Some(gone), Some(Some(existing))) => {
                    existing.retain(|a| !gone.contains(a));
                    existing.is_empty()
                }
                (Some(_), Some(None)) => false, // "every action" has no list to remove from
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if remove {
                st.subscriptions.remove(&c);
                index.remove(&c, session);
            }
        }
        Ok(st.subscription_set())
    }
}

/// Whether adding `channels` (with `actions`) keeps the session within its limits.
fn check_limits(
    st: &SessionState,
    channels: &[String],
    actions: Option<&BTreeSet<String>>,
    max_channels: usize,
) -> Result<(), WireError> {
    let new: BTreeSet<&String> = channels
        .iter()
        .filter(|c| !st.subscriptions.contains_key(*c))
        .collect();
    if st.subscriptions.len() + new.len() > max_channels {
        return Err(WireError::new(
            ErrorCode::InvalidMessage,
            format!(
                "at most {max_channels} channels per session (MaxChannelsPerSession); this one has {} and asked for {} more",
                st.subscriptions.len(),
                new.len()
            ),
        )
        .with_details(json!({"field": "channels", "limit": max_channels})));
    }
    let Some(actions) = actions else {
        return Ok(());
    };
    for c in channels {
        let existing = match st.subscriptions.get(c) {
            Some(Some(a)) => a.union(actions).count(),
            _ => actions.len(),
        };
        if existing > MAX_ACTIONS_PER_CHANNEL {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                format!("at most {MAX_ACTIONS_PER_CHANNEL} actions per channel in a filter"),
            )
            .with_details(json!({"field": "actions", "limit": MAX_ACTIONS_PER_CHANNEL})));
        }
    }
    Ok(())
}

type SubscriptionRequest = (Vec<String>, Option<BTreeSet<String>>);

fn parse_subscription(data: &Value) -> Result<SubscriptionRequest, WireError> {
    let names = |key: &str| -> Result<Option<Vec<String>>, WireError> {
        match data.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v.as_str() {
                    Some(s) if is_valid_name(s) => Ok(s.to_string()),
                    _ => Err(WireError::new(
                        ErrorCode::InvalidMessage,
                        format!("{key} must be names matching [a-z0-9_.-]{{1,64}}"),
                    )
                    .with_details(json!({"field": key}))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(WireError::new(
                ErrorCode::InvalidMessage,
                format!("{key} must be an array"),
            )
            .with_details(json!({"field": key}))),
        }
    };
    let channels = names("channels")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::InvalidMessage,
                "needs {\"channels\": [names], \"actions\": [names]?}",
            )
            .with_details(json!({"field": "channels"}))
        })?;
    let actions = names("actions")?.map(|a| a.into_iter().collect());
    Ok((channels, actions))
}
