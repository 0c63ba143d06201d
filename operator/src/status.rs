//! ScaledObject status conditions, changed in place so ebb writes the status only when
//! something in it changed, and the [`StatusCell`] through which every status write of one
//! object goes.

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

/// A condition to set: type, status, reason, message.
pub type Wanted<'a> = (&'a str, Status, &'a str, String);

/// One ScaledObject's conditions as ebb last wrote them, and the one way to write its status.
///
/// The controller and the object's scale loop both set conditions (the controller Ready on a
/// refusal, Paused and HPAActive; the loop Ready, Active and Fallback after each poll), and a
/// merge patch replaces the whole conditions list. So every write holds the cell from setting
/// its conditions until the apiserver has answered: no writer sends a list older than the one
/// another writer sent before it.
pub struct StatusCell {
    conditions: tokio::sync::Mutex<Vec<Condition>>,
}

impl StatusCell {
    /// A cell holding `conditions` (what the object's status says when ebb first sees it).
    pub fn new(conditions: Vec<Condition>) -> Self {
        Self {
            conditions: tokio::sync::Mutex::new(conditions),
        }
    }

    /// A cell holding the `stored` conditions of an object, or the initial ones when it has
    /// none yet.
    pub fn from_stored(stored: Option<&[Condition]>) -> Self {
        Self::new(
            stored
                .filter(|c| !c.is_empty())
                .map(<[Condition]>::to_vec)
                .unwrap_or_else(initial_conditions),
        )
    }

    /// Sets `wanted`, then calls `write` with whether any condition changed and the whole
    /// list, holding the cell until `write`'s future is done. `write` decides whether to patch.
    pub async fn write<T, F, Fut>(&self, wanted: &[Wanted<'_>], write: F) -> T
    where
        F: FnOnce(bool, Vec<Condition>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let mut conditions = self.conditions.lock().await;
        let mut changed = false;
        for (type_, status, reason, message) in wanted {
            changed |= set_condition(&mut conditions, type_, *status, reason, message.clone());
        }
        write(changed, conditions.clone()).await
    }

    /// Sets `wanted` without writing (the next write carries them); returns whether any changed.
    pub async fn set(&self, wanted: &[Wanted<'_>]) -> bool {
        self.write(wanted, |changed, _| async move { changed })
            .await
    }
}

/// The condition `type_`, if set.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Two writers of one object's status, the second starting while the first waits for the
    /// apiserver: the writes do not overlap, and the last one sent carries both writers'
    /// conditions. (Before the cell, the scale loop cloned the conditions, released them and
    /// then patched, so its older list could land after the controller's newer one.)
    #[tokio::test]
    async fn writes_of_one_status_never_overlap_and_the_last_carries_every_condition() {
        let cell = Arc::new(StatusCell::new(initial_conditions()));
        type Sent = std::sync::Mutex<Vec<(&'static str, Vec<Condition>)>>;
        let sent: Arc<Sent> = Arc::default();
        let in_flight = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let patch =
            |who: &'static str, sent: Arc<Sent>, in_flight: Arc<std::sync::atomic::AtomicBool>| {
                move |_changed: bool, conditions: Vec<Condition>| async move {
                    assert!(
                        !in_flight.swap(true, std::sync::atomic::Ordering::SeqCst),
                        "two status writes of one object in flight at once"
                    );
                    // The apiserver takes its time answering the loop.
                    if who == "loop" {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    sent.lock().unwrap().push((who, conditions));
                    in_flight.store(false, std::sync::atomic::Ordering::SeqCst);
                }
            };
        let active = [(
            CONDITION_ACTIVE,
            Status::True,
            "ScalerActive",
            String::new(),
        )];
        let refused = [(
            CONDITION_READY,
            Status::False,
            "ScaledObjectCheckFailed",
            "spec.cooldownPeriod: expected 0 or more".to_string(),
        )];
        let loop_write = cell.write(&active, patch("loop", sent.clone(), in_flight.clone()));
        let controller_write = async {
            tokio::task::yield_now().await;
            cell.write(
                &refused,
                patch("controller", sent.clone(), in_flight.clone()),
            )
            .await;
        };
        tokio::join!(loop_write, controller_write);

        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 2);
        let (_, last) = sent.last().unwrap();
        let ready = condition(last, CONDITION_READY).unwrap();
        let active = condition(last, CONDITION_ACTIVE).unwrap();
        assert_eq!(ready.reason.as_deref(), Some("ScaledObjectCheckFailed"));
        assert_eq!(active.status, "True");
    }

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
