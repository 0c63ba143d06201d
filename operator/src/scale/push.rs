//! Activity pushed by `external-push` triggers (KEDA's `StreamIsActive`): the scale loop listens
//! to every push stream of its triggers beside its timers, and a push wakes it at once.
//!
//! A push of `true` polls the object now and counts the pushed trigger as active even if its
//! poll, a moment later, says otherwise (as KEDA requests a scale on the push alone); a push of
//! `false` polls now, so the usual cooldown starts from a fresh reading. Stream errors are the
//! scaler's business (it reopens the stream with backoff); polling goes on meanwhile.

use std::collections::BTreeMap;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt as _, StreamExt as _};
use tracing::{info, warn};

use crate::scale::decision::TriggerOutcome;
use crate::scale::poll::{PolledTrigger, TriggerResult};

/// The merged push streams of one scale loop's triggers.
pub struct Pushes {
    streams: SelectAll<BoxStream<'static, (usize, Result<bool, ebb_scalers::ScalerError>)>>,
    /// Triggers whose stream failed last, so a failure is logged once, not at every retry.
    failing: BTreeMap<usize, bool>,
}

impl Pushes {
    /// Opens the push stream of every trigger that has one.
    pub fn open(triggers: &[PolledTrigger]) -> Self {
        let streams = triggers
            .iter()
            .filter_map(|t| {
                let index = t.index;
                let push = t.scaler.as_push()?;
                Some(push.activity().map(move |item| (index, item)).boxed())
            })
            .collect::<Vec<_>>();
        Self {
            streams: futures::stream::select_all(streams),
            failing: BTreeMap::new(),
        }
    }

    /// Whether any trigger pushes.
    pub fn any(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Waits for the next pushes: the first one, with every other already waiting (the last
    /// value per trigger), so a burst of pushes costs one poll. Errors are logged and waited
    /// past. `None` once every stream ended.
    pub async fn next(&mut self, scaled_object: &str) -> Option<BTreeMap<usize, bool>> {
        loop {
            let first = self.streams.next().await?;
            let mut items = vec![first];
            while let Some(Some(item)) = self.streams.next().now_or_never() {
                items.push(item);
            }
            let pushed = self.sort(scaled_object, items);
            if !pushed.is_empty() {
                return Some(pushed);
            }
        }
    }

    /// The pushed values, last per trigger; errors logged when a stream starts failing.
    fn sort(
        &mut self,
        scaled_object: &str,
        items: Vec<(usize, Result<bool, ebb_scalers::ScalerError>)>,
    ) -> BTreeMap<usize, bool> {
        let mut pushed = BTreeMap::new();
        for (index, item) in items {
            match item {
                Ok(active) => {
                    if self.failing.insert(index, false) == Some(true) {
                        info!(
                            scaledobject = scaled_object,
                            trigger = index,
                            "activity stream back"
                        );
                    }
                    pushed.insert(index, active);
                }
                Err(e) => {
                    if self.failing.insert(index, true) != Some(true) {
                        warn!(scaledobject = scaled_object, trigger = index, error = %e,
                            "activity stream failed; polling goes on while it is reopened");
                    }
                }
            }
        }
        pushed
    }
}

/// Counts each trigger pushed active as active in a poll's results, when its poll read it
/// inactive (a failed read stays failed: fallback and errors keep their rules).
pub fn apply(results: &mut [TriggerResult], pushed: &BTreeMap<usize, bool>) {
    for result in results {
        if pushed.get(&result.index) == Some(&true) && result.outcome == TriggerOutcome::Inactive {
            result.outcome = TriggerOutcome::Active;
            for reading in &mut result.readings {
                reading.active = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use ebb_scalers::{
        ActivityStream, MetricSpec, MetricsAndActivity, PushScaler, Scaler, ScalerError,
    };
    use futures::channel::mpsc;

    use super::*;
    use crate::scale::poll::MetricReading;

    fn result(index: usize, outcome: TriggerOutcome) -> TriggerResult {
        TriggerResult {
            index,
            name: None,
            readings: vec![MetricReading {
                name: format!("s{index}-m"),
                value: if outcome == TriggerOutcome::Failed {
                    Err(crate::scale::poll::ReadError::NoValue)
                } else {
                    Ok(1.0)
                },
                active: outcome == TriggerOutcome::Active,
                clamped: None,
                took: Duration::ZERO,
            }],
            outcome,
        }
    }

    #[test]
    fn a_push_of_true_makes_an_inactive_trigger_active_and_nothing_else() {
        let mut results = vec![
            result(0, TriggerOutcome::Inactive),
            result(1, TriggerOutcome::Inactive),
            result(2, TriggerOutcome::Failed),
            result(3, TriggerOutcome::Active),
        ];
        let pushed = BTreeMap::from([(0, true), (1, false), (2, true), (3, false)]);
        apply(&mut results, &pushed);
        let outcomes: Vec<_> = results.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                TriggerOutcome::Active,
                TriggerOutcome::Inactive,
                TriggerOutcome::Failed,
                // A push of false does not overrule a poll that reads the trigger active.
                TriggerOutcome::Active,
            ]
        );
        assert!(results[0].readings[0].active);
        assert!(!results[1].readings[0].active);
    }

    /// A scaler whose pushes the test sends.
    struct Pushing(std::sync::Mutex<Option<mpsc::UnboundedReceiver<Result<bool, ScalerError>>>>);

    #[async_trait]
    impl Scaler for Pushing {
        fn metric_specs(&self) -> Vec<MetricSpec> {
            Vec::new()
        }
        async fn metrics_and_activity(&self, _: &str) -> Result<MetricsAndActivity, ScalerError> {
            Err(ScalerError::UnknownMetric(String::new()))
        }
        fn as_push(&self) -> Option<&dyn PushScaler> {
            Some(self)
        }
    }

    impl PushScaler for Pushing {
        fn activity(&self) -> ActivityStream {
            let receiver = self.0.lock().unwrap().take().expect("opened once");
            Box::pin(receiver)
        }
    }

    struct Plain;

    #[async_trait]
    impl Scaler for Plain {
        fn metric_specs(&self) -> Vec<MetricSpec> {
            Vec::new()
        }
        async fn metrics_and_activity(&self, _: &str) -> Result<MetricsAndActivity, ScalerError> {
            Err(ScalerError::UnknownMetric(String::new()))
        }
    }

    fn trigger(index: usize, scaler: Arc<dyn Scaler>) -> PolledTrigger {
        PolledTrigger {
            index,
            name: None,
            scaler,
        }
    }

    #[tokio::test]
    async fn pushes_are_merged_coalesced_per_trigger_and_errors_are_not_pushes() {
        let (a_send, a) = mpsc::unbounded();
        let (b_send, b) = mpsc::unbounded();
        let mut pushes = Pushes::open(&[
            trigger(0, Arc::new(Pushing(std::sync::Mutex::new(Some(a))))),
            trigger(1, Arc::new(Plain)),
            trigger(2, Arc::new(Pushing(std::sync::Mutex::new(Some(b))))),
        ]);
        assert!(pushes.any());
        assert!(!Pushes::open(&[trigger(0, Arc::new(Plain))]).any());

        // A burst: the last value per trigger, in one wake.
        a_send.unbounded_send(Ok(true)).unwrap();
        a_send.unbounded_send(Ok(false)).unwrap();
        b_send.unbounded_send(Ok(true)).unwrap();
        assert_eq!(
            pushes.next("ns/so").await,
            Some(BTreeMap::from([(0, false), (2, true)]))
        );

        // An error alone wakes nobody; the next push comes through.
        b_send
            .unbounded_send(Err(ScalerError::UnknownMetric("x".into())))
            .unwrap();
        assert_eq!(pushes.next("ns/so").now_or_never(), None, "still waiting");
        b_send.unbounded_send(Ok(true)).unwrap();
        assert_eq!(
            pushes.next("ns/so").await,
            Some(BTreeMap::from([(2, true)]))
        );

        // Every stream ended: no more pushes.
        drop((a_send, b_send));
        assert_eq!(pushes.next("ns/so").await, None);
    }
}
