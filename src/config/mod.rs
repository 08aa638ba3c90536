//! `config.json` → [`Config`]: defaults, `${env.NAME}` substitution, Hydrogen aliases, and
//! validation errors that name the key, the value and the allowed range (docs/protocol.md §7).
//!
//! Every setting is one row of the table in `settings.rs`; `table.rs` is the macro that makes
//! the structs from it, `values.rs` reads and shows each type, `reader.rs` walks the JSON,
//! `load.rs` reads a document and `checks.rs` checks the whole.

mod checks;
mod load;
mod mqtt;
mod reader;
mod settings;
mod table;
#[cfg(test)]
mod tests;
mod values;

pub use checks::{MAX_ACTIONS_PER_CHANNEL, SHORT_KEY_CHARS};
pub use load::default_path;
pub use mqtt::{MqttConfig, MqttUrl};
pub use reader::LoadReport;
pub use settings::{CompressionConfig, Config, DeliveryConfig, MetricsConfig, RateLimitConfig};
