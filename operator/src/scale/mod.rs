//! The scale loop: per-ScaledObject polling and the decisions it takes.

pub mod budget;
pub mod composite;
pub mod decision;
pub mod evaluate;
pub mod fallback;
pub mod formula;
pub mod nudge;
pub mod object;
pub mod poll;
pub mod push;
pub mod schedule;
pub mod task;
