//! The server's own machinery: its named threads (`threads`).

pub(crate) mod threads;
