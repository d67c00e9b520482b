//! Operator-facing surfaces: metrics and the control API.

pub mod api;
pub mod metrics;
