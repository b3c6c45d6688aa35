//! Operator-facing tools that ask a running member from outside: the
//! `healthcheck` command that containers run, and the Prometheus endpoint
//! ([`metrics`]). (What a member says of itself, the `Status` call, is the
//! client service's: `api::status`.)

pub mod health;
pub mod metrics;
