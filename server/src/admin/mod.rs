//! Operator-facing tools that ask a running member from outside: the
//! `healthcheck` command that containers run, and the Prometheus endpoint
//! ([`metrics`]); and [`bootstrap`], the policy by which a new cluster is
//! initialized once. (What a member says of itself, the `Status` call, is the
//! client service's: `api::status`.)

pub mod bootstrap;
pub mod health;
pub mod metrics;
