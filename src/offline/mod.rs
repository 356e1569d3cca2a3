//! The offline side: building model versions outside the request path.

pub mod synthetic;
