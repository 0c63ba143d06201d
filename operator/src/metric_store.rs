//! The latest answer for every ScaledObject's metrics: written by the scale loops after each
//! poll, read by the external metrics API. Values from fallback and the composite metric of
//! `scalingModifiers` are stored here as the HPA should see them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// What the metrics API answers for one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A value: read, computed by the formula, or the fallback value.
    Value(f64),
    /// Why there is no value; never disguised as 0.
    Error(String),
}

/// One ScaledObject's answers from one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// When the poll finished.
    pub at: Instant,
    /// How long the answers stay good enough to serve (a couple of polling intervals).
    pub fresh_for: Duration,
    /// Metrics that are plain readings, with the age after which the metrics API reads them
    /// again from the scaler rather than serve this answer. Fallback values, the composite
    /// metric and triggers with `useCachedMetrics` are absent: they are only served from here.
    pub reread_after: BTreeMap<String, Duration>,
    /// By metric name.
    pub answers: BTreeMap<String, Answer>,
}

/// What the store knows of one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// No answers for this ScaledObject (unknown, paused, or not polled yet).
    UnknownObject,
    /// The ScaledObject has no metric of that name.
    UnknownMetric,
    /// The latest answer and its age.
    Found {
        /// The answer.
        answer: Answer,
        /// How old it is.
        age: Duration,
        /// Whether it is still fresh enough to serve.
        fresh: bool,
        /// Whether the metrics API should read it again from the scaler instead.
        reread: bool,
    },
}

/// Answers by namespace and ScaledObject name.
#[derive(Default)]
pub struct MetricStore {
    objects: RwLock<HashMap<(String, String), Published>>,
}

impl MetricStore {
    /// Replaces a ScaledObject's answers with a new poll's.
    pub fn publish(&self, namespace: &str, scaled_object: &str, published: Published) {
        self.objects
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                (namespace.to_string(), scaled_object.to_string()),
                published,
            );
    }

    /// Forgets a ScaledObject (deleted, paused, or rebuilt).
    pub fn forget(&self, namespace: &str, scaled_object: &str) {
        self.objects
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(namespace.to_string(), scaled_object.to_string()));
    }

    /// What the store knows of one metric.
    pub fn lookup(&self, namespace: &str, scaled_object: &str, metric: &str) -> Lookup {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        let Some(published) = objects.get(&(namespace.to_string(), scaled_object.to_string()))
        else {
            return Lookup::UnknownObject;
        };
        match find(&published.answers, metric) {
            None => Lookup::UnknownMetric,
            Some((name, answer)) => {
                let age = published.at.elapsed();
                Lookup::Found {
                    answer: answer.clone(),
                    age,
                    fresh: age <= published.fresh_for,
                    reread: published
                        .reread_after
                        .get(name)
                        .is_some_and(|after| age > *after),
                }
            }
        }
    }

    /// The latest answer for one metric, with the time it was read.
    pub fn get(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Option<(Answer, Instant)> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        let published = objects.get(&(namespace.to_string(), scaled_object.to_string()))?;
        find(&published.answers, metric).map(|(_, answer)| (answer.clone(), published.at))
    }
}

/// The answer to `metric` and the name it is published under: `metric` itself, or the name
/// that equals it but for ASCII case. The HPA controller asks for metric names in lower case
/// (`s0-cron-europe-berlin-...` for `s0-cron-Europe-Berlin-...`), so names are matched as KEDA
/// matches them.
fn find<'a>(
    answers: &'a BTreeMap<String, Answer>,
    metric: &str,
) -> Option<(&'a String, &'a Answer)> {
    answers.get_key_value(metric).or_else(|| {
        answers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(metric))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_replaced_per_poll_and_forgotten_with_their_object() {
        let store = MetricStore::default();
        let at = Instant::now();
        store.publish(
            "shop",
            "orders",
            Published {
                at,
                fresh_for: Duration::from_secs(60),
                reread_after: BTreeMap::from([("s0-redis-jobs".into(), Duration::ZERO)]),
                answers: BTreeMap::from([("s0-redis-jobs".into(), Answer::Value(7.0))]),
            },
        );
        assert_eq!(
            store.get("shop", "orders", "s0-redis-jobs"),
            Some((Answer::Value(7.0), at))
        );
        assert_eq!(store.get("shop", "orders", "s1-other"), None);
        assert_eq!(store.get("other", "orders", "s0-redis-jobs"), None);
        store.publish(
            "shop",
            "orders",
            Published {
                at,
                fresh_for: Duration::ZERO,
                reread_after: BTreeMap::new(),
                answers: BTreeMap::from([("s0-redis-jobs".into(), Answer::Error("down".into()))]),
            },
        );
        assert_eq!(
            store.get("shop", "orders", "s0-redis-jobs"),
            Some((Answer::Error("down".into()), at))
        );
        assert!(matches!(
            store.lookup("shop", "orders", "s0-redis-jobs"),
            Lookup::Found {
                fresh: false,
                reread: false,
                ..
            }
        ));
        assert_eq!(
            store.lookup("shop", "orders", "s1-x"),
            Lookup::UnknownMetric
        );
        assert_eq!(
            store.get("shop", "orders", "S0-Redis-Jobs"),
            Some((Answer::Error("down".into()), at)),
            "names match without regard to case"
        );
        assert_eq!(store.get("shop", "orders", "s1-redis-jobs"), None);
        store.forget("shop", "orders");
        assert_eq!(store.get("shop", "orders", "s0-redis-jobs"), None);
        assert_eq!(
            store.lookup("shop", "orders", "s0-redis-jobs"),
            Lookup::UnknownObject
        );
    }
}
