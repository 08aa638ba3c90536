//! Where a command on an application channel goes: a handler registered in this process
//! (`handlers`, run on the worker pool) or a service connection (`services`).
#![forbid(unsafe_code)]

pub(crate) mod handlers;
pub(crate) mod router;
pub(crate) mod services;
