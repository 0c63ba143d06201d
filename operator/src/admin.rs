//! The admin endpoints: `/healthz`, `/readyz` and `/metrics` (Prometheus text, with KEDA's
//! metric names where they exist so existing dashboards keep working).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel as _, EncodeLabelSet, LabelSetEncoder, prometheus_text, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One scaler metric's series key: namespace, ScaledObject, trigger index, trigger type, metric.
/// The field order makes every series of one ScaledObject adjacent, so forgetting an object is
/// one range of the map.
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

/// KEDA's `scaler` label value for a trigger type without a name: the name of the scaler
/// that serves it in KEDA (`redisScaler`), so dashboards that filter on it keep working. A type
/// KEDA does not know keeps its own name.
pub fn keda_scaler_label(trigger_type: &str) -> String {
    let known = match trigger_type {
        "redis" | "redis-cluster" | "redis-sentinel" => "redisScaler",
        "redis-streams" | "redis-cluster-streams" | "redis-sentinel-streams" => {
            "redisStreamsScaler"
        }
        "rabbitmq" => "rabbitMQScaler",
        "metrics-api" => "metricsAPIScaler",
        "cron" => "cronScaler",
        "external" => "externalScaler",
        "external-push" => "externalPushScaler",
        "cpu" | "memory" => "cpuMemoryScaler",
        other => return other.to_string(),
    };
    known.to_string()
}

/// The KEDA labels of one trigger's series.
struct TriggerLabels<'a>(&'a SeriesKey);

impl EncodeLabelSet for TriggerLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let k = self.0;
        ("namespace", k.namespace.as_str()).encode(encoder.encode_label())?;
        ("scaledObject", k.scaled_object.as_str()).encode(encoder.encode_label())?;
        ("scaler", k.scaler.as_str()).encode(encoder.encode_label())?;
        ("triggerIndex", k.trigger_index).encode(encoder.encode_label())?;
        ("metric", k.metric.as_str()).encode(encoder.encode_label())?;
        ("type", "scaledobject").encode(encoder.encode_label())
    }
}

/// The KEDA labels of one ScaledObject's series.
struct ObjectLabels<'a>(&'a (String, String));

impl EncodeLabelSet for ObjectLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (namespace, name) = self.0;
        ("namespace", namespace.as_str()).encode(encoder.encode_label())?;
        ("scaledObject", name.as_str()).encode(encoder.encode_label())
    }
}

/// The labels of `keda_internal_scale_loop_latency_seconds`.
struct LoopLabels<'a>(&'a (String, String));

impl EncodeLabelSet for LoopLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (namespace, name) = self.0;
        ("namespace", namespace.as_str()).encode(encoder.encode_label())?;
        ("type", "scaledobject").encode(encoder.encode_label())?;
        ("resource", name.as_str()).encode(encoder.encode_label())
    }
}

/// What is known of one trigger's metric: its last value, whether it is active, its errors,
/// how long its last read took.
#[derive(Debug, Default)]
struct Reading {
    value: Option<f64>,
    active: bool,
    errors: u64,
    latency: f64,
}

/// What is known of one ScaledObject as a whole.
#[derive(Debug, Default)]
struct ObjectState {
    /// Whether it is paused; None until it is reconciled.
    paused: Option<bool>,
    /// Its triggers' types, for `keda_trigger_registered_total`.
    trigger_types: Vec<String>,
    /// Failed reads of any of its triggers.
    errors: u64,
    /// How late its last poll started, in seconds.
    loop_latency: Option<f64>,
}

/// The per-ScaledObject series. They come and go with the objects, and an object's series are
/// forgotten together, so they live in ordered maps (one key per trigger metric, one per
/// object) and are encoded at scrape time through prometheus-client's [`Collector`], rather
/// than in `Family`s, which can remove a series only by its full label set.
#[derive(Debug, Default)]
struct ObjectSeries {
    readings: BTreeMap<SeriesKey, Reading>,
    objects: BTreeMap<(String, String), ObjectState>,
}

#[derive(Debug, Default)]
struct ObjectCollector(Arc<Mutex<ObjectSeries>>);

impl ObjectCollector {
    /// A gauge or counter family over the readings.
    fn readings<T>(
        encoder: &mut DescriptorEncoder,
        s: &ObjectSeries,
        (name, help, kind): (&str, &str, MetricType),
        value: impl Fn(&Reading) -> Option<T>,
    ) -> Result<(), std::fmt::Error>
    where
        T: prometheus_client::encoding::EncodeGaugeValue
            + prometheus_client::encoding::EncodeCounterValue,
    {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (k, r) in &s.readings {
            if let Some(v) = value(r) {
                let labels = TriggerLabels(k);
                let mut metric = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => {
                        metric.encode_counter::<TriggerLabels, _, u64>(&v, None)?
                    }
                    _ => metric.encode_gauge(&v)?,
                }
            }
        }
        Ok(())
    }
}

impl Collector for ObjectCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Self::readings(
            &mut encoder,
            &s,
            (
                "keda_scaler_metrics_value",
                "The last value read for a trigger's metric",
                MetricType::Gauge,
            ),
            |r| r.value,
        )?;
        Self::readings(
            &mut encoder,
            &s,
            (
                "keda_scaler_active",
                "Whether a trigger is active (1) or not (0)",
                MetricType::Gauge,
            ),
            |r| Some(u64::from(r.active)),
        )?;
        Self::readings(
            &mut encoder,
            &s,
            (
                "keda_scaler_metrics_latency_seconds",
                "How long the last read of a trigger's metric took",
                MetricType::Gauge,
            ),
            |r| Some(r.latency),
        )?;
        // Present from the first read, at 0 until a read fails, as in KEDA.
        Self::readings(
            &mut encoder,
            &s,
            (
                "keda_scaler_detail_errors",
                "Failed reads of a trigger's metric",
                MetricType::Counter,
            ),
            |r| Some(r.errors),
        )?;
        let mut family = encoder.encode_descriptor(
            "keda_scaled_object_errors",
            "Failed reads of any of a ScaledObject's triggers",
            None,
            MetricType::Counter,
        )?;
        for (object, state) in &s.objects {
            family
                .encode_family(&ObjectLabels(object))?
                .encode_counter::<ObjectLabels, _, u64>(&state.errors, None)?;
        }
        let mut family = encoder.encode_descriptor(
            "keda_scaled_object_paused",
            "Whether a ScaledObject is paused (1) or not (0)",
            None,
            MetricType::Gauge,
        )?;
        for (object, state) in &s.objects {
            if let Some(paused) = state.paused {
                family
                    .encode_family(&ObjectLabels(object))?
                    .encode_gauge(&i64::from(paused))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "keda_internal_scale_loop_latency_seconds",
            "How late a ScaledObject's last poll started after its scheduled time",
            None,
            MetricType::Gauge,
        )?;
        for (object, state) in &s.objects {
            if let Some(lag) = state.loop_latency {
                family
                    .encode_family(&LoopLabels(object))?
                    .encode_gauge(&lag)?;
            }
        }
        // KEDA's registration gauges: triggers by type, ScaledObjects by namespace.
        let mut triggers: BTreeMap<&str, i64> = BTreeMap::new();
        let mut per_namespace: BTreeMap<&str, i64> = BTreeMap::new();
        for ((namespace, _), state) in &s.objects {
            *per_namespace.entry(namespace.as_str()).or_default() += 1;
            for t in &state.trigger_types {
                *triggers.entry(t.as_str()).or_default() += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "keda_trigger_registered_total",
            "Triggers of the ScaledObjects ebb handles, by type",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in &triggers {
            family.encode_family(&[("type", *kind)])?.encode_gauge(n)?;
        }
        let mut family = encoder.encode_descriptor(
            "keda_resource_registered_total",
            "ScaledObjects ebb handles, by namespace",
            None,
            MetricType::Gauge,
        )?;
        for (namespace, n) in &per_namespace {
            family
                .encode_family(&[("type", "scaled_object"), ("namespace", *namespace)])?
                .encode_gauge(n)?;
        }
        Ok(())
    }
}

/// `keda_build_info`'s labels, KEDA's names: Go's names for the OS and architecture.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfo {
    version: &'static str,
    git_commit: &'static str,
    goversion: &'static str,
    goos: &'static str,
    goarch: &'static str,
}

impl BuildInfo {
    fn of_this_binary() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("EBB_GIT_COMMIT"),
            goversion: env!("EBB_RUSTC_VERSION"),
            goos: std::env::consts::OS,
            goarch: match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                "x86" => "386",
                other => other,
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// KEDA's labels of a ScaledJob's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ScaledJobLabels {
    namespace: String,
    scaled_job: String,
}

impl EncodeLabelSet for ScaledJobLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("namespace", self.namespace.as_str()).encode(encoder.encode_label())?;
        ("scaledJob", self.scaled_job.as_str()).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Verdict {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Written {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    verb: &'static str,
    resource: String,
}

/// Upper bounds (seconds) of the histogram buckets.
/// Millisecond buckets at the low end: a healthy poll lag is a few milliseconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Upper bounds (seconds) of the admission review histogram: an answer from the caches takes
/// well under a millisecond, one that reads a workload a round trip to the apiserver.
const ADMISSION_BUCKETS: [f64; 10] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

/// ebb's metrics and readiness, shared by the controller, the scale loops and the server.
/// Encoding, escaping and the exposition formats are prometheus-client's.
pub struct Metrics {
    registry: Registry,
    objects: Arc<Mutex<ObjectSeries>>,
    scale_loops: Gauge,
    scale_writes: Counter,
    writes: Family<Written, Counter>,
    requests: Family<Request, Counter>,
    reconciles: Counter,
    reconcile_errors: Family<Reason, Counter>,
    read_errors: Family<Reason, Counter>,
    loop_restarts: Family<Reason, Counter>,
    poll_lag: Histogram,
    poll_duration: Histogram,
    scaled_job_errors: Family<ScaledJobLabels, Counter>,
    jobs_created: Counter,
    activation_checks: Counter,
    job_loops: Gauge,
    admission_reviews: Family<Verdict, Counter>,
    admission_duration: Histogram,
    ready: AtomicBool,
    syncing: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let objects = Arc::<Mutex<ObjectSeries>>::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ObjectCollector(objects.clone())));
        let build_info = Family::<BuildInfo, Gauge>::default();
        build_info
            .get_or_create(&BuildInfo::of_this_binary())
            .set(1);
        registry.register(
            "keda_build_info",
            "The build of the running ebb, under KEDA's name (goversion is the Rust compiler's version)",
            build_info,
        );
        let scale_loops = Gauge::default();
        registry.register(
            "ebb_scale_loops",
            "Scale loops running: one per ScaledObject this replica polls",
            scale_loops.clone(),
        );
        let scale_writes = Counter::default();
        registry.register(
            "ebb_scale_writes",
            "Writes to scale targets' /scale by ebb",
            scale_writes.clone(),
        );
        let writes = Family::default();
        registry.register(
            "ebb_apiserver_writes",
            "Successful writes to the apiserver by ebb, by what was written",
            writes.clone(),
        );
        let requests = Family::default();
        registry.register(
            "ebb_apiserver_requests",
            "Requests ebb sent to the apiserver, reads and watches included, by verb and resource",
            requests.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "ebb_reconciles",
            "Reconciles of ScaledObjects (a change to one's spec, annotations or owned HPA, a scale loop's request, or the periodic resync)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::default();
        registry.register(
            "ebb_reconcile_errors",
            "Reconciles that failed and are retried, by the error's kind",
            reconcile_errors.clone(),
        );
        let read_errors = Family::default();
        registry.register(
            "ebb_scaler_read_errors",
            "Failed reads of a trigger's metric, by the error's kind",
            read_errors.clone(),
        );
        let loop_restarts = Family::default();
        registry.register(
            "ebb_scale_loop_restarts",
            "Scale loops started again after they panicked or ended unasked",
            loop_restarts.clone(),
        );
        let poll_lag = Histogram::new(BUCKETS);
        registry.register(
            "ebb_poll_lag_seconds",
            "How late a scale loop's poll started after its scheduled tick",
            poll_lag.clone(),
        );
        let poll_duration = Histogram::new(BUCKETS);
        registry.register(
            "ebb_poll_duration_seconds",
            "How long one poll of a ScaledObject's triggers took",
            poll_duration.clone(),
        );
        let scaled_job_errors = Family::default();
        registry.register(
            "keda_scaled_job_errors",
            "Failed trigger reads of a ScaledJob's polls, as KEDA counts them",
            scaled_job_errors.clone(),
        );
        let jobs_created = Counter::default();
        registry.register(
            "ebb_jobs_created",
            "Jobs created for ScaledJobs by this replica",
            jobs_created.clone(),
        );
        let activation_checks = Counter::default();
        registry.register(
            "ebb_activation_checks",
            "Adaptive activation checks of resting ScaledObjects between their polls (each reads every trigger once)",
            activation_checks.clone(),
        );
        let job_loops = Gauge::default();
        registry.register(
            "ebb_scaled_job_loops",
            "Poll loops running: one per ScaledJob this replica polls",
            job_loops.clone(),
        );
        let admission_reviews = Family::default();
        registry.register(
            "ebb_admission_reviews",
            "Admission reviews the webhook answered on this replica, by verdict (allowed, denied, malformed)",
            admission_reviews.clone(),
        );
        let admission_duration = Histogram::new(ADMISSION_BUCKETS);
        registry.register(
            "ebb_admission_review_duration_seconds",
            "How long the webhook took to answer one admission review, from its body read to its answer",
            admission_duration.clone(),
        );
        Self {
            registry,
            objects,
            admission_reviews,
            admission_duration,
            scaled_job_errors,
            jobs_created,
            activation_checks,
            job_loops,
            scale_loops,
            scale_writes,
            writes,
            requests,
            reconciles,
            reconcile_errors,
            read_errors,
            loop_restarts,
            poll_lag,
            poll_duration,
            ready: AtomicBool::new(false),
            syncing: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    fn objects(&self) -> MutexGuard<'_, ObjectSeries> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one reading: its value (if read) and activity, or an error, and how long the
    /// read took.
    pub fn record(
        &self,
        key: SeriesKey,
        value: Option<f64>,
        active: bool,
        took: std::time::Duration,
    ) {
        let mut s = self.objects();
        if value.is_none() {
            s.objects
                .entry((key.namespace.clone(), key.scaled_object.clone()))
                .or_default()
                .errors += 1;
        }
        let reading = s.readings.entry(key).or_default();
        match value {
            Some(v) => reading.value = Some(v),
            None => reading.errors += 1,
        }
        reading.active = active;
        reading.latency = took.as_secs_f64();
    }

    /// Records a reconciled ScaledObject: whether it is paused, and its triggers' types.
    pub fn register(
        &self,
        namespace: &str,
        scaled_object: &str,
        paused: bool,
        trigger_types: Vec<String>,
    ) {
        let mut s = self.objects();
        let state = s
            .objects
            .entry((namespace.to_string(), scaled_object.to_string()))
            .or_default();
        state.paused = Some(paused);
        state.trigger_types = trigger_types;
    }

    /// Records how late a ScaledObject's poll started after its scheduled time.
    pub fn record_loop_latency(
        &self,
        namespace: &str,
        scaled_object: &str,
        lag: std::time::Duration,
    ) {
        let mut s = self.objects();
        s.objects
            .entry((namespace.to_string(), scaled_object.to_string()))
            .or_default()
            .loop_latency = Some(lag.as_secs_f64());
    }

    /// Records one admission review: its verdict (`allowed`, `denied` or `malformed`) and how
    /// long its answer took.
    pub fn record_admission_review(&self, verdict: &'static str, took: std::time::Duration) {
        self.admission_reviews
            .get_or_create(&Verdict { verdict })
            .inc();
        self.admission_duration.observe(took.as_secs_f64());
    }

    /// Admission reviews answered with `verdict` so far.
    pub fn admission_reviews(&self, verdict: &'static str) -> u64 {
        self.admission_reviews
            .get_or_create(&Verdict { verdict })
            .get()
    }

    /// Sets the number of running scale loops.
    pub fn set_scale_loops(&self, n: usize) {
        self.scale_loops.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a write to a target's `/scale`.
    pub fn count_scale_write(&self) {
        self.scale_writes.inc();
        self.count_write("scale");
    }

    /// Counts a successful write to the apiserver, by what was written (`status`, `hpa`,
    /// `event`; `/scale` writes are counted by [`Metrics::count_scale_write`]).
    pub fn count_write(&self, resource: &'static str) {
        self.writes.get_or_create(&Written { resource }).inc();
    }

    /// Counts a request to the apiserver, by verb and resource.
    pub fn count_request(&self, verb: &'static str, resource: &str) {
        let request = Request {
            verb,
            resource: resource.to_string(),
        };
        self.requests.get_or_create(&request).inc();
    }

    /// The requests counted so far with this verb and resource.
    pub fn requests(&self, verb: &'static str, resource: &str) -> u64 {
        let request = Request {
            verb,
            resource: resource.to_string(),
        };
        self.requests.get(&request).map_or(0, |c| c.get())
    }

    /// Counts one reconcile of a ScaledObject.
    pub fn count_reconcile(&self) {
        self.reconciles.inc();
    }

    /// Counts a reconcile that failed and will be retried, by the error's label.
    pub fn count_reconcile_error(&self, reason: &'static str) {
        self.reconcile_errors
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// The failed reconciles counted so far with this error label.
    pub fn reconcile_errors(&self, reason: &'static str) -> u64 {
        self.reconcile_errors
            .get(&Reason { reason })
            .map_or(0, |c| c.get())
    }

    /// Counts a failed trigger read of ScaledJob `namespace/name`.
    pub fn count_scaled_job_error(&self, namespace: &str, name: &str) {
        self.scaled_job_errors
            .get_or_create(&ScaledJobLabels {
                namespace: namespace.to_string(),
                scaled_job: name.to_string(),
            })
            .inc();
    }

    /// Starts ScaledJob `namespace/name`'s error series at 0 (as KEDA does once it polls).
    pub fn register_scaled_job(&self, namespace: &str, name: &str) {
        let _ = self.scaled_job_errors.get_or_create(&ScaledJobLabels {
            namespace: namespace.to_string(),
            scaled_job: name.to_string(),
        });
    }

    /// Drops ScaledJob `namespace/name`'s series (it is gone).
    pub fn forget_scaled_job(&self, namespace: &str, name: &str) {
        self.scaled_job_errors.remove(&ScaledJobLabels {
            namespace: namespace.to_string(),
            scaled_job: name.to_string(),
        });
    }

    /// Counts Jobs created for ScaledJobs.
    pub fn count_jobs_created(&self, n: u64) {
        self.jobs_created.inc_by(n);
    }

    /// Sets the number of running ScaledJob poll loops.
    pub fn set_job_loops(&self, n: usize) {
        self.job_loops.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts an adaptive activation check.
    pub fn count_activation_check(&self) {
        self.activation_checks.inc();
    }

    /// Counts a failed metric read, by the error's label.
    pub fn count_read_error(&self, reason: &'static str) {
        self.read_errors.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a scale loop restarted after it ended unasked, by how it ended (`panic`, `ended`).
    pub fn count_loop_restart(&self, reason: &'static str) {
        self.loop_restarts.get_or_create(&Reason { reason }).inc();
    }

    /// The scale loop restarts counted so far for this reason.
    pub fn loop_restarts(&self, reason: &'static str) -> u64 {
        self.loop_restarts
            .get(&Reason { reason })
            .map_or(0, |c| c.get())
    }

    /// The reconciles counted so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }

    /// Records how late a poll started after its scheduled tick.
    pub fn observe_poll_lag(&self, lag: std::time::Duration) {
        self.poll_lag.observe(lag.as_secs_f64());
    }

    /// Records how long one poll of a ScaledObject's triggers took.
    pub fn observe_poll_duration(&self, took: std::time::Duration) {
        self.poll_duration.observe(took.as_secs_f64());
    }

    /// Forgets every series of a ScaledObject (deleted, or rebuilt with other triggers).
    pub fn forget(&self, namespace: &str, scaled_object: &str) {
        let first = SeriesKey {
            namespace: namespace.to_string(),
            scaled_object: scaled_object.to_string(),
            trigger_index: 0,
            scaler: String::new(),
            metric: String::new(),
        };
        let mut s = self.objects();
        let mine: Vec<SeriesKey> = s
            .readings
            .range(&first..)
            .map(|(k, _)| k)
            .take_while(|k| k.namespace == namespace && k.scaled_object == scaled_object)
            .cloned()
            .collect();
        for k in &mine {
            s.readings.remove(k);
        }
        s.objects
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

    /// Every series in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and every label set here encodes.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Every series in the OpenMetrics text format, for scrapers that ask for it.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = text::encode(&mut out, &self.registry);
        out
    }
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

/// The OpenMetrics media type, served to scrapers whose `Accept` asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics_text(
    State(metrics): State<Arc<Metrics>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS)],
            metrics.render_openmetrics(),
        )
    } else {
        (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            metrics.render(),
        )
    }
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
            scaler: keda_scaler_label("redis"),
            metric: metric.into(),
        }
    }

    #[test]
    fn scaled_job_errors_are_counted_under_keda_s_name_and_forgotten_with_the_object() {
        let m = Metrics::default();
        m.register_scaled_job("media", "encoder");
        assert!(
            m.render().contains(
                "keda_scaled_job_errors_total{namespace=\"media\",scaledJob=\"encoder\"} 0"
            ),
            "{}",
            m.render()
        );
        m.count_scaled_job_error("media", "encoder");
        m.count_scaled_job_error("media", "encoder");
        m.count_jobs_created(3);
        let text = m.render();
        assert!(
            text.contains(
                "keda_scaled_job_errors_total{namespace=\"media\",scaledJob=\"encoder\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("ebb_jobs_created_total 3"), "{text}");
        m.forget_scaled_job("media", "encoder");
        assert!(!m.render().contains("scaledJob=\"encoder\""));
    }

    #[test]
    fn renders_keda_names_and_forgets_deleted_objects() {
        let m = Metrics::default();
        let ms = std::time::Duration::from_millis;
        m.record(key("orders", "s0-redis-jobs"), Some(7.0), true, ms(4));
        m.record(key("orders", "s0-redis-jobs"), None, false, ms(250));
        m.record(key("quo\"te", "s0-redis-x"), Some(0.5), false, ms(1));
        m.register("shop", "orders", false, vec!["redis".into(), "cron".into()]);
        m.register("shop", "quo\"te", true, vec!["redis".into()]);
        m.register("other", "a", false, vec!["redis".into()]);
        m.record_loop_latency("shop", "orders", ms(3));
        m.count_scale_write();
        let text = m.render();
        let labels = "namespace=\"shop\",scaledObject=\"orders\",scaler=\"redisScaler\",triggerIndex=\"0\",metric=\"s0-redis-jobs\",type=\"scaledobject\"";
        let quote = "namespace=\"shop\",scaledObject=\"quo\\\"te\",scaler=\"redisScaler\",triggerIndex=\"0\",metric=\"s0-redis-x\",type=\"scaledobject\"";
        for line in [
            format!("keda_scaler_metrics_value{{{labels}}} 7.0\n"),
            format!("keda_scaler_active{{{labels}}} 0\n"),
            format!("keda_scaler_metrics_latency_seconds{{{labels}}} 0.25\n"),
            format!("keda_scaler_detail_errors_total{{{labels}}} 1\n"),
            // Present at 0 from the first read, as in KEDA.
            format!("keda_scaler_detail_errors_total{{{quote}}} 0\n"),
            "# TYPE keda_scaler_detail_errors_total counter\n".into(),
            "keda_scaled_object_errors_total{namespace=\"shop\",scaledObject=\"orders\"} 1\n".into(),
            "keda_scaled_object_paused{namespace=\"shop\",scaledObject=\"orders\"} 0\n".into(),
            "keda_scaled_object_paused{namespace=\"shop\",scaledObject=\"quo\\\"te\"} 1\n".into(),
            "keda_internal_scale_loop_latency_seconds{namespace=\"shop\",type=\"scaledobject\",resource=\"orders\"} 0.003\n".into(),
            "keda_trigger_registered_total{type=\"redis\"} 3\n".into(),
            "keda_trigger_registered_total{type=\"cron\"} 1\n".into(),
            "keda_resource_registered_total{type=\"scaled_object\",namespace=\"shop\"} 2\n".into(),
            "keda_resource_registered_total{type=\"scaled_object\",namespace=\"other\"} 1\n".into(),
            format!(
                "keda_build_info{{version=\"{}\",git_commit=\"{}\",",
                env!("CARGO_PKG_VERSION"),
                env!("EBB_GIT_COMMIT")
            ),
            "ebb_scale_writes_total 1\n".into(),
            "ebb_apiserver_writes_total{resource=\"scale\"} 1\n".into(),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        // KEDA removed keda_scaler_errors_total (now keda_scaler_detail_errors_total).
        assert!(!text.contains("keda_scaler_errors"), "{text}");

        m.forget("shop", "orders");
        let text = m.render();
        assert!(!text.contains("scaledObject=\"orders\""), "{text}");
        assert!(!text.contains("resource=\"orders\""), "{text}");
        assert!(
            text.contains("keda_trigger_registered_total{type=\"redis\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("type=\"cron\""), "{text}");
        assert!(text.contains("scaledObject=\"quo\\\"te\""));
    }

    #[test]
    fn keda_scaler_labels_are_kedas_scaler_names() {
        for (trigger, label) in [
            ("redis", "redisScaler"),
            ("redis-sentinel", "redisScaler"),
            ("redis-cluster-streams", "redisStreamsScaler"),
            ("rabbitmq", "rabbitMQScaler"),
            ("metrics-api", "metricsAPIScaler"),
            ("cron", "cronScaler"),
            ("external-push", "externalPushScaler"),
            ("my-plugin", "my-plugin"),
        ] {
            assert_eq!(keda_scaler_label(trigger), label);
        }
    }

    #[test]
    fn forgetting_an_object_keeps_its_neighbours() {
        let m = Metrics::default();
        let mut other_namespace = key("orders", "s0-redis-jobs");
        other_namespace.namespace = "shop2".into();
        let mut second_trigger = key("orders", "s1-redis-more");
        second_trigger.trigger_index = 1;
        for k in [
            key("order", "s0-redis-jobs"),
            key("orders", "s0-redis-jobs"),
            second_trigger,
            key("orders2", "s0-redis-jobs"),
            other_namespace,
        ] {
            m.record(k, Some(1.0), true, std::time::Duration::ZERO);
        }
        m.forget("shop", "orders");
        let text = m.render();
        let values: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keda_scaler_metrics_value{"))
            .collect();
        assert_eq!(values.len(), 3, "{text}");
        for kept in [
            "namespace=\"shop\",scaledObject=\"order\"",
            "namespace=\"shop\",scaledObject=\"orders2\"",
            "namespace=\"shop2\",scaledObject=\"orders\"",
        ] {
            assert!(values.iter().any(|l| l.contains(kept)), "{kept}: {text}");
        }
    }

    #[tokio::test]
    async fn serves_prometheus_text_unless_openmetrics_is_asked_for() {
        use tower::ServiceExt as _;
        let metrics = Arc::new(Metrics::default());
        metrics.count_reconcile();
        let scrape = |accept: Option<&'static str>| {
            let mut request = axum::http::Request::get("/metrics");
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let request = request.body(axum::body::Body::empty()).unwrap();
            router(metrics.clone()).oneshot(request)
        };
        let response = scrape(None).await.unwrap();
        let kind = response.headers()[header::CONTENT_TYPE].clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            body.contains("# TYPE ebb_reconciles_total counter\n"),
            "{body}"
        );
        assert!(body.contains("\nebb_reconciles_total 1\n"), "{body}");
        assert!(!body.contains("# EOF"), "{body}");

        // Prometheus's own Accept header when it prefers OpenMetrics.
        let response = scrape(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ))
        .await
        .unwrap();
        let kind = response.headers()[header::CONTENT_TYPE].clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            kind.to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        assert!(body.contains("# TYPE ebb_reconciles counter\n"), "{body}");
        assert!(body.contains("\nebb_reconciles_total 1\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
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
        m.record_admission_review("denied", std::time::Duration::from_micros(700));
        m.record_admission_review("allowed", std::time::Duration::from_millis(30));
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
            "ebb_admission_reviews_total{verdict=\"denied\"} 1\n",
            "ebb_admission_review_duration_seconds_bucket{le=\"0.0005\"} 0\n",
            "ebb_admission_review_duration_seconds_bucket{le=\"0.001\"} 1\n",
            "ebb_admission_review_duration_seconds_bucket{le=\"0.1\"} 2\n",
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
