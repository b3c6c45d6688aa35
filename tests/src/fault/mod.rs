//! The fault suite's workload and checker: clients record every operation
//! (invoke, ok / fail / unknown, times) while faults run; the checker then
//! proves nothing acknowledged was lost and every history is linearizable.

pub mod checker;
pub mod history;
pub mod workload;
