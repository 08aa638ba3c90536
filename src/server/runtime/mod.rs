//! The server's own machinery: its named threads (`threads`), the shutdown signal, the process
//! sampler, and the service manager (systemd notify).

pub(crate) mod sampler;
pub(crate) mod service_manager;
pub(crate) mod signal;
pub(crate) mod threads;
