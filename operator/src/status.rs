//! ScaledObject status conditions, changed in place so the controller writes the status only
//! when something in it changed.

use ebb_crds::Condition;
use ebb_crds::condition::{
    CONDITION_ACTIVE, CONDITION_FALLBACK, CONDITION_PAUSED, CONDITION_READY,
};

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// The conditions a new ScaledObject starts with, all Unknown (as KEDA does).
pub fn initial_conditions() -> Vec<Condition> {
    [
        CONDITION_READY,
        CONDITION_ACTIVE,
        CONDITION_FALLBACK,
        CONDITION_PAUSED,
    ]
    .into_iter()
    .map(|type_| Condition {
        type_: type_.to_string(),
        status: Status::Unknown.as_str().to_string(),
        reason: None,
        message: None,
    })
    .collect()
}

/// Sets condition `type_`, adding it if missing; returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
) -> bool {
    let wanted = Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.into()),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) if *existing == wanted => false,
        Some(existing) => {
            *existing = wanted;
            true
        }
        None => {
            conditions.push(wanted);
            true
        }
    }
}

/// The condition `type_`, if set.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_unknown_and_reports_changes_only() {
        let mut conditions = initial_conditions();
        assert_eq!(conditions.len(), 4);
        assert!(conditions.iter().all(|c| c.status == "Unknown"));

        assert!(set_condition(
            &mut conditions,
            CONDITION_READY,
            Status::False,
            "ScaledObjectCheckFailed",
            "spec.minReplicaCount: 5 is above maxReplicaCount 2"
        ));
        assert!(!set_condition(
            &mut conditions,
            CONDITION_READY,
            Status::False,
            "ScaledObjectCheckFailed",
            "spec.minReplicaCount: 5 is above maxReplicaCount 2"
        ));
        let ready = condition(&conditions, CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("ScaledObjectCheckFailed"))
        );
        assert!(set_condition(
            &mut conditions,
            CONDITION_READY,
            true.into(),
            "ScaledObjectReady",
            "ScaledObject is defined correctly and is ready for scaling"
        ));
        assert!(set_condition(
            &mut conditions,
            "HPAActive",
            Status::True,
            "ValidMetricFound",
            ""
        ));
        assert_eq!(conditions.len(), 5);
    }
}
