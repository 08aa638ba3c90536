//! The server's own machinery: its named threads (`threads`).

pub(crate) mod sampler;
pub(crate) mod signal;
pub(crate) mod threads;
