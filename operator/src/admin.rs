//! The admin endpoints: `/healthz`, `/readyz` and `/metrics` (Prometheus text, with KEDA's
//! metric names where they exist so existing dashboards keep working).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// One scaler metric's series key: namespace, ScaledObject, trigger index, trigger type, metric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    /// Namespace.
    pub namespace: String,
    /// ScaledObject name.
    pub scaled_object: String,
    /// Trigger index.
    pub trigger_index: usize,
    /// Trigger type (`redis`, `rabbitmq`, ...).
    pub scaler: String,
    /// Metric name (`s0-redis-jobs`).
    pub metric: String,
}

#[derive(Default)]
struct Series {
    values: BTreeMap<SeriesKey, f64>,
    active: BTreeMap<SeriesKey, bool>,
    errors: BTreeMap<SeriesKey, u64>,
    paused: BTreeMap<(String, String), bool>,
    scale_writes: u64,
    writes: BTreeMap<&'static str, u64>,
    requests: BTreeMap<(&'static str, String), u64>,
    reconciles: u64,
    reconcile_errors: BTreeMap<&'static str, u64>,
    read_errors: BTreeMap<&'static str, u64>,
    loop_restarts: BTreeMap<&'static str, u64>,
    poll_lag: Histogram,
    poll_duration: Histogram,
}

/// Upper bounds (seconds) of the histogram buckets.
/// Millisecond buckets at the low end: a healthy poll lag is a few milliseconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram with [`BUCKETS`].
#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// ebb's metrics and readiness, shared by the controller, the scale loops and the server.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<Series>,
    ready: AtomicBool,
    syncing: AtomicBool,
    scale_loops: AtomicUsize,
}

impl Metrics {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one reading: its value (if read) and activity, or an error.
    pub fn record(&self, key: SeriesKey, value: Option<f64>, active: bool) {
        let mut s = self.series();
        match value {
            Some(v) => {
                s.values.insert(key.clone(), v);
            }
            None => *s.errors.entry(key.clone()).or_insert(0) += 1,
        }
        s.active.insert(key, active);
    }

    /// Records whether a ScaledObject is paused.
    pub fn set_paused(&self, namespace: &str, scaled_object: &str, paused: bool) {
        self.series()
            .paused
            .insert((namespace.to_string(), scaled_object.to_string()), paused);
    }

    /// Sets the number of running scale loops.
    pub fn set_scale_loops(&self, n: usize) {
        self.scale_loops.store(n, Ordering::Relaxed);
    }

    /// Counts a write to a target's `/scale`.
    pub fn count_scale_write(&self) {
        let mut s = self.series();
        s.scale_writes += 1;
        *s.writes.entry("scale").or_insert(0) += 1;
    }

    /// Counts a successful write to the apiserver, by what was written (`status`, `hpa`,
    /// `event`; `/scale` writes are counted by [`Metrics::count_scale_write`]).
    pub fn count_write(&self, resource: &'static str) {
        *self.series().writes.entry(resource).or_insert(0) += 1;
    }

    /// Counts a request to the apiserver, by verb and resource.
    pub fn count_request(&self, verb: &'static str, resource: &str) {
        *self
            .series()
            .requests
            .entry((verb, resource.to_string()))
            .or_insert(0) += 1;
    }

    /// The requests counted so far, by verb and resource.
    pub fn requests(&self) -> BTreeMap<(&'static str, String), u64> {
        self.series().requests.clone()
    }

    /// Counts one reconcile of a ScaledObject.
    pub fn count_reconcile(&self) {
        self.series().reconciles += 1;
    }

    /// Counts a reconcile that failed and will be retried, by the error's label.
    pub fn count_reconcile_error(&self, reason: &'static str) {
        *self.series().reconcile_errors.entry(reason).or_insert(0) += 1;
    }

    /// Counts a failed metric read, by the error's label.
    pub fn count_read_error(&self, reason: &'static str) {
        *self.series().read_errors.entry(reason).or_insert(0) += 1;
    }

    /// Counts a scale loop restarted after it ended unasked, by how it ended (`panic`, `ended`).
    pub fn count_loop_restart(&self, reason: &'static str) {
        *self.series().loop_restarts.entry(reason).or_insert(0) += 1;
    }

    /// The scale loop restarts counted so far, by reason.
    pub fn loop_restarts(&self) -> BTreeMap<&'static str, u64> {
        self.series().loop_restarts.clone()
    }

    /// The reconciles counted so far.
    pub fn reconciles(&self) -> u64 {
        self.series().reconciles
    }

    /// Records how late a poll started after its scheduled tick.
    pub fn observe_poll_lag(&self, lag: std::time::Duration) {
        self.series().poll_lag.observe(lag.as_secs_f64());
    }

    /// Records how long one poll of a ScaledObject's triggers took.
    pub fn observe_poll_duration(&self, took: std::time::Duration) {
        self.series().poll_duration.observe(took.as_secs_f64());
    }

    /// Forgets every series of a ScaledObject (deleted, or rebuilt with other triggers).
    pub fn forget(&self, namespace: &str, scaled_object: &str) {
        let mut s = self.series();
        let mine = |k: &SeriesKey| k.namespace == namespace && k.scaled_object == scaled_object;
        s.values.retain(|k, _| !mine(k));
        s.active.retain(|k, _| !mine(k));
        s.errors.retain(|k, _| !mine(k));
        s.paused
            .remove(&(namespace.to_string(), scaled_object.to_string()));
    }

    /// Marks ebb ready (its watches are up) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Marks the controller's watches as starting (true) or synced or stopped (false). A
    /// standby, which runs no controller, is ready once it reaches the apiserver; the leader only
    /// once its watches have listed everything.
    pub fn set_syncing(&self, syncing: bool) {
        self.syncing.store(syncing, Ordering::SeqCst);
    }

    /// Whether ebb is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.syncing.load(Ordering::SeqCst)
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let s = self.series();
        let mut out = String::new();
        let labels = |k: &SeriesKey| {
            format!(
                "namespace=\"{}\",scaledObject=\"{}\",scaler=\"{}\",triggerIndex=\"{}\",metric=\"{}\",type=\"scaledobject\"",
                escape(&k.namespace),
                escape(&k.scaled_object),
                escape(&k.scaler),
                k.trigger_index,
                escape(&k.metric)
            )
        };
        let _ = writeln!(
            out,
            "# HELP keda_scaler_metrics_value The last value read for a trigger's metric.\n# TYPE keda_scaler_metrics_value gauge"
        );
        for (k, v) in &s.values {
            let _ = writeln!(out, "keda_scaler_metrics_value{{{}}} {v}", labels(k));
        }
        let _ = writeln!(
            out,
            "# HELP keda_scaler_active Whether a trigger is active (1) or not (0).\n# TYPE keda_scaler_active gauge"
        );
        for (k, v) in &s.active {
            let _ = writeln!(out, "keda_scaler_active{{{}}} {}", labels(k), u8::from(*v));
        }
        let _ = writeln!(
            out,
            "# HELP keda_scaler_errors_total Failed reads of a trigger's metric.\n# TYPE keda_scaler_errors_total counter"
        );
        for (k, v) in &s.errors {
            let _ = writeln!(out, "keda_scaler_errors_total{{{}}} {v}", labels(k));
        }
        let _ = writeln!(
            out,
            "# HELP keda_scaled_object_paused Whether a ScaledObject is paused (1) or not (0).\n# TYPE keda_scaled_object_paused gauge"
        );
        for ((namespace, name), paused) in &s.paused {
            let _ = writeln!(
                out,
                "keda_scaled_object_paused{{namespace=\"{}\",scaledObject=\"{}\",type=\"scaledobject\"}} {}",
                escape(namespace),
                escape(name),
                u8::from(*paused)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ebb_scale_loops Scale loops running: one per ScaledObject this replica polls.\n# TYPE ebb_scale_loops gauge\nebb_scale_loops {}",
            self.scale_loops.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ebb_scale_writes_total Writes to scale targets' /scale by ebb.\n# TYPE ebb_scale_writes_total counter\nebb_scale_writes_total {}",
            s.scale_writes
        );
        let _ = writeln!(
            out,
            "# HELP ebb_apiserver_writes_total Successful writes to the apiserver by ebb, by what was written.\n# TYPE ebb_apiserver_writes_total counter"
        );
        for (resource, n) in &s.writes {
            let _ = writeln!(
                out,
                "ebb_apiserver_writes_total{{resource=\"{resource}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ebb_apiserver_requests_total Requests ebb sent to the apiserver, reads and watches included, by verb and resource.\n# TYPE ebb_apiserver_requests_total counter"
        );
        for ((verb, resource), n) in &s.requests {
            let _ = writeln!(
                out,
                "ebb_apiserver_requests_total{{verb=\"{verb}\",resource=\"{}\"}} {n}",
                escape(resource)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ebb_reconciles_total Reconciles of ScaledObjects (a change to one's spec, annotations or owned HPA, a scale loop's request, or the periodic resync).\n# TYPE ebb_reconciles_total counter\nebb_reconciles_total {}",
            s.reconciles
        );
        for (name, help, counts) in [
            (
                "ebb_reconcile_errors_total",
                "Reconciles that failed and are retried, by the error's kind.",
                &s.reconcile_errors,
            ),
            (
                "ebb_scaler_read_errors_total",
                "Failed reads of a trigger's metric, by the error's kind.",
                &s.read_errors,
            ),
            (
                "ebb_scale_loop_restarts_total",
                "Scale loops started again after they panicked or ended unasked.",
                &s.loop_restarts,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (reason, n) in counts {
                let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
            }
        }
        s.poll_lag.render(
            &mut out,
            "ebb_poll_lag_seconds",
            "How late a scale loop's poll started after its scheduled tick.",
        );
        s.poll_duration.render(
            &mut out,
            "ebb_poll_duration_seconds",
            "How long one poll of a ScaledObject's triggers took.",
        );
        out
    }
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The admin router.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(so: &str, metric: &str) -> SeriesKey {
        SeriesKey {
            namespace: "shop".into(),
            scaled_object: so.into(),
            trigger_index: 0,
            scaler: "redis".into(),
            metric: metric.into(),
        }
    }

    #[test]
    fn renders_keda_names_and_forgets_deleted_objects() {
        let m = Metrics::default();
        m.record(key("orders", "s0-redis-jobs"), Some(7.0), true);
        m.record(key("orders", "s0-redis-jobs"), None, false);
        m.record(key("quo\"te", "s0-redis-x"), Some(0.5), false);
        m.set_paused("shop", "orders", false);
        m.count_scale_write();
        let text = m.render();
        let labels = "namespace=\"shop\",scaledObject=\"orders\",scaler=\"redis\",triggerIndex=\"0\",metric=\"s0-redis-jobs\",type=\"scaledobject\"";
        assert!(
            text.contains(&format!("keda_scaler_metrics_value{{{labels}}} 7\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("keda_scaler_active{{{labels}}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("keda_scaler_errors_total{{{labels}}} 1\n")),
            "{text}"
        );
        assert!(text.contains("scaledObject=\"quo\\\"te\""), "{text}");
        assert!(text.contains("keda_scaled_object_paused{namespace=\"shop\",scaledObject=\"orders\",type=\"scaledobject\"} 0\n"));
        assert!(text.contains("ebb_scale_writes_total 1\n"));
        assert!(text.contains("ebb_apiserver_writes_total{resource=\"scale\"} 1\n"));
        assert!(text.contains("# TYPE keda_scaler_errors_total counter"));

        m.forget("shop", "orders");
        let text = m.render();
        assert!(!text.contains("scaledObject=\"orders\""), "{text}");
        assert!(text.contains("scaledObject=\"quo\\\"te\""));
    }

    #[test]
    fn histograms_count_into_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_poll_lag(std::time::Duration::from_millis(3));
        m.observe_poll_lag(std::time::Duration::from_millis(300));
        m.observe_poll_lag(std::time::Duration::from_secs(9));
        m.count_write("status");
        m.count_loop_restart("panic");
        m.count_read_error("timeout");
        m.count_read_error("timeout");
        m.count_reconcile_error("api");
        let text = m.render();
        for line in [
            "ebb_poll_lag_seconds_bucket{le=\"0.0025\"} 0\n",
            "ebb_poll_lag_seconds_bucket{le=\"0.005\"} 1\n",
            "ebb_poll_lag_seconds_bucket{le=\"0.25\"} 1\n",
            "ebb_poll_lag_seconds_bucket{le=\"0.5\"} 2\n",
            "ebb_poll_lag_seconds_bucket{le=\"5\"} 2\n",
            "ebb_poll_lag_seconds_bucket{le=\"+Inf\"} 3\n",
            "ebb_poll_lag_seconds_count 3\n",
            "ebb_poll_duration_seconds_count 0\n",
            "ebb_apiserver_writes_total{resource=\"status\"} 1\n",
            "ebb_scale_loop_restarts_total{reason=\"panic\"} 1\n",
            "ebb_scaler_read_errors_total{reason=\"timeout\"} 2\n",
            "ebb_reconcile_errors_total{reason=\"api\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn ready_only_when_marked() {
        let m = Metrics::default();
        assert!(!m.is_ready());
        m.set_ready(true);
        assert!(m.is_ready());
        m.set_syncing(true);
        assert!(!m.is_ready());
        m.set_syncing(false);
        assert!(m.is_ready());
    }
}
