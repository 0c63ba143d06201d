//! `cron`: a fixed replica count inside timezone-aware time windows.
//!
//! A window opens at each time `start` matches and closes at the next time `end` matches. The
//! trigger is active while a window is open, which is exactly when the next `end` comes no
//! later than the next `start`. The metric is `desiredReplicas` while active and 0 otherwise
//! (as in KEDA since 2.18), against a target of 1, so the HPA asks for `desiredReplicas` pods
//! inside the window.
//!
//! Nothing is polled: the decision is a pure function of the clock
//! ([`CronConfig::is_active_at`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::trigger::{MetricTargetType, Source, Trigger};

/// The metric's value outside a window.
const OUTSIDE_WINDOW: f64 = 0.0;

/// The metric's target: one replica's worth.
const TARGET: f64 = 1.0;

/// Registers `cron`.
pub fn register(registry: &mut Registry) {
    registry.register("cron", |t| Ok(Box::new(CronScaler::new(t)?)));
}

/// Parsed `cron` trigger metadata.
#[derive(Debug, Clone)]
pub struct CronConfig {
    timezone: Tz,
    start: Cron,
    end: Cron,
    desired_replicas: i64,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl CronConfig {
    /// Parses a `cron` trigger.
    pub fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let timezone_text = t.required("timezone", &[Source::Metadata])?.value;
        let timezone: Tz = timezone_text.trim().parse().map_err(|_| {
            t.error(
                "timezone",
                format!(
                    "expected an IANA time zone name such as Europe/Berlin or Etc/UTC, got {:?}",
                    short(&timezone_text)
                ),
            )
        })?;
        let start_text = t.required("start", &[Source::Metadata])?.value;
        let end_text = t.required("end", &[Source::Metadata])?.value;
        let start = schedule(t, "start", &start_text)?;
        let end = schedule(t, "end", &end_text)?;
        if normalise(&start_text) == normalise(&end_text) {
            return Err(t.error("end", "must differ from start"));
        }
        let desired_replicas: i64 = t.parse_required(
            "desiredReplicas",
            &[Source::Metadata],
            "a whole number of replicas",
        )?;
        if desired_replicas < 1 {
            return Err(t.error(
                "desiredReplicas",
                format!("expected a whole number of replicas above 0, got {desired_replicas}"),
            ));
        }
        Ok(Self {
            metric_name: metric_name(
                t.index,
                &format!(
                    "cron-{}-{}-{}",
                    timezone.name(),
                    compact(&start_text),
                    compact(&end_text)
                ),
            ),
            timezone,
            start,
            end,
            desired_replicas,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
        })
    }

    /// Whether a window is open at `now`: the next `end` after `now` comes no later than the
    /// next `start` after it. At the instant `start` matches the window is open; at the
    /// instant `end` matches it is closed.
    pub fn is_active_at(&self, now: DateTime<Utc>) -> Result<bool, String> {
        let local = now.with_timezone(&self.timezone);
        let next_start = self
            .start
            .find_next_occurrence(&local, false)
            .map_err(|e| format!("start: no next time: {e}"))?;
        let next_end = self
            .end
            .find_next_occurrence(&local, false)
            .map_err(|e| format!("end: no next time: {e}"))?;
        Ok(next_end <= next_start)
    }

    /// The metric value for an activity decision.
    pub fn value(&self, active: bool) -> f64 {
        if active {
            self.desired_replicas as f64
        } else {
            OUTSIDE_WINDOW
        }
    }
}

/// A five-field (minute hour day-of-month month day-of-week) schedule; `@hourly`, `@daily`
/// and the other descriptors are accepted too.
fn schedule(t: &Trigger, key: &str, text: &str) -> Result<Cron, ConfigError> {
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    parser.parse(text.trim()).map_err(|e| {
        t.error(
            key,
            format!(
                "expected a cron schedule with five fields (minute hour day-of-month month day-of-week), got {:?}: {e}",
                short(text)
            ),
        )
    })
}

/// Whitespace-insensitive form, to compare two schedules as written.
fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The schedule as it appears in the metric name, as KEDA writes it: no spaces, `*` as `x`,
/// `/` as `Sl`, `?` as `Qm` (`0 6 * * *` becomes `06xxx`, `*/2 * * * *` becomes `xSl2xxxx`).
fn compact(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '*' => "x".to_string(),
            '/' => "Sl".to_string(),
            '?' => "Qm".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A value cut to a length that fits in an error message.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A `cron` trigger.
#[derive(Debug)]
pub struct CronScaler {
    config: CronConfig,
}

impl CronScaler {
    /// Parses the trigger.
    pub fn new(trigger: &Trigger) -> Result<Self, ConfigError> {
        Ok(Self {
            config: CronConfig::parse(trigger)?,
        })
    }
}

#[async_trait]
impl Scaler for CronScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: TARGET,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let active =
            self.config
                .is_active_at(Utc::now())
                .map_err(|message| ScalerError::Source {
                    source_name: format!("cron schedule in {}", self.config.timezone.name()),
                    message,
                })?;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value: self.config.value(active),
            }],
            active,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn trigger(meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 0,
            trigger_type: "cron".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn config(tz: &str, start: &str, end: &str) -> CronConfig {
        CronConfig::parse(&trigger(&[
            ("timezone", tz),
            ("start", start),
            ("end", end),
            ("desiredReplicas", "10"),
        ]))
        .expect("valid")
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn defaults_and_every_documented_key() {
        let c = config("Asia/Kolkata", "0 6 * * *", "0 20 * * *");
        assert_eq!(c.metric_name, "s0-cron-Asia-Kolkata-06xxx-020xxx");
        // KEDA's own examples of its names: `*` x, `/` Sl, `?` Qm, `,` and `-` kept.
        assert_eq!(
            config("Etc/UTC", "0 0 * * Thu", "59 23 * * Thu").metric_name,
            "s0-cron-Etc-UTC-00xxThu-5923xxThu"
        );
        assert_eq!(
            config("Etc/UTC", "0 */2 * * *", "0 1-23/2 * * *").metric_name,
            "s0-cron-Etc-UTC-0xSl2xxx-01-23Sl2xxx"
        );
        assert_eq!(
            config("Etc/UTC", "0 8 ? * 1,3", "0 18 ? * 1,3").metric_name,
            "s0-cron-Etc-UTC-08Qmx1,3-018Qmx1,3"
        );
        assert_eq!(c.desired_replicas, 10);
        assert_eq!(c.metric_type, MetricTargetType::AverageValue);
        let scaler = CronScaler { config: c };
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s0-cron-Asia-Kolkata-06xxx-020xxx".into(),
                target: 1.0,
                target_type: MetricTargetType::AverageValue,
            }]
        );

        let mut t = trigger(&[
            ("timezone", "Etc/UTC"),
            ("start", "0 0 * * Thu"),
            ("end", "59 23 * * Thu"),
            ("desiredReplicas", "3"),
        ]);
        t.index = 2;
        t.metric_type = Some("Value".into());
        let c = CronConfig::parse(&t).unwrap();
        assert_eq!(c.metric_name, "s2-cron-Etc-UTC-00xxThu-5923xxThu");
        assert_eq!(c.metric_type, MetricTargetType::Value);
        // Outside a window the metric is 0, as in KEDA (1 before KEDA 2.18).
        assert_eq!((c.value(true), c.value(false)), (3.0, 0.0));

        let c = config("Etc/UTC", "@hourly", "30 * * * *");
        assert!(c.is_active_at(utc(2026, 1, 1, 10, 10, 0)).unwrap());
    }

    #[test]
    fn active_inside_the_window_only() {
        // 06:00 to 20:00 in Kolkata (UTC+5:30) is 00:30 to 14:30 UTC.
        let c = config("Asia/Kolkata", "0 6 * * *", "0 20 * * *");
        let cases = [
            (
                utc(2026, 11, 23, 0, 29, 59),
                false,
                "a second before the start",
            ),
            (utc(2026, 11, 23, 0, 30, 0), true, "at the start"),
            (utc(2026, 11, 23, 9, 0, 0), true, "inside"),
            (
                utc(2026, 11, 23, 14, 29, 59),
                true,
                "a second before the end",
            ),
            (utc(2026, 11, 23, 14, 30, 0), false, "at the end"),
            (utc(2026, 11, 23, 20, 0, 0), false, "after the end"),
        ];
        for (now, want, what) in cases {
            assert_eq!(c.is_active_at(now).unwrap(), want, "{what}");
        }
    }

    #[test]
    fn windows_that_cross_midnight_and_weeks() {
        let night = config("Europe/Berlin", "0 22 * * *", "0 6 * * *");
        // Berlin is UTC+1 in November.
        assert!(night.is_active_at(utc(2026, 11, 23, 23, 0, 0)).unwrap());
        assert!(night.is_active_at(utc(2026, 11, 24, 4, 0, 0)).unwrap());
        assert!(!night.is_active_at(utc(2026, 11, 24, 12, 0, 0)).unwrap());

        // Weekdays 09:00 to 17:00 in New York; 2026-11-28 is a Saturday.
        let office = config("America/New_York", "0 9 * * 1-5", "0 17 * * 1-5");
        assert!(office.is_active_at(utc(2026, 11, 23, 15, 0, 0)).unwrap());
        assert!(!office.is_active_at(utc(2026, 11, 28, 15, 0, 0)).unwrap());
    }

    #[test]
    fn daylight_saving_time_moves_the_window_in_utc() {
        // 09:00 to 17:00 in Berlin: 07:00-15:00 UTC in summer, 08:00-16:00 UTC in winter.
        let c = config("Europe/Berlin", "0 9 * * *", "0 17 * * *");
        assert!(c.is_active_at(utc(2026, 7, 1, 7, 30, 0)).unwrap());
        assert!(!c.is_active_at(utc(2026, 12, 1, 7, 30, 0)).unwrap());
        assert!(c.is_active_at(utc(2026, 12, 1, 15, 30, 0)).unwrap());
        assert!(!c.is_active_at(utc(2026, 7, 1, 15, 30, 0)).unwrap());
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let ok = [
            ("timezone", "Etc/UTC"),
            ("start", "0 6 * * *"),
            ("end", "0 20 * * *"),
            ("desiredReplicas", "4"),
        ];
        let with = |key: &'static str, value: &'static str| {
            let mut meta: Vec<(&str, &str)> =
                ok.iter().filter(|(k, _)| *k != key).copied().collect();
            if !value.is_empty() {
                meta.push((key, value));
            }
            meta
        };
        /// (metadata, key at fault, problem)
        type Owned = (
            Vec<(&'static str, &'static str)>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Owned> = vec![
            (
                with("timezone", ""),
                "timezone",
                "required; set metadata \"timezone\"",
            ),
            (
                with("timezone", "Mars/Olympus"),
                "timezone",
                "expected an IANA time zone name such as Europe/Berlin or Etc/UTC, got \"Mars/Olympus\"",
            ),
            (
                with("start", ""),
                "start",
                "required; set metadata \"start\"",
            ),
            (with("end", ""), "end", "required; set metadata \"end\""),
            (with("end", " 0  6 * * * "), "end", "must differ from start"),
            (
                with("desiredReplicas", ""),
                "desiredReplicas",
                "required; set metadata \"desiredReplicas\"",
            ),
            (
                with("desiredReplicas", "ten"),
                "desiredReplicas",
                "expected a whole number of replicas, got \"ten\"",
            ),
            (
                with("desiredReplicas", "-1"),
                "desiredReplicas",
                "expected a whole number of replicas above 0, got -1",
            ),
            (
                with("desiredReplicas", "0"),
                "desiredReplicas",
                "expected a whole number of replicas above 0, got 0",
            ),
        ];
        for (meta, key, problem) in cases {
            let err = CronConfig::parse(&trigger(&meta)).expect_err("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
        }

        let schedules: [Case; 4] = [
            (&[("start", "0 6 * *")], "start", "five fields"),
            (&[("start", "0 0 6 * * *")], "start", "five fields"),
            (&[("end", "61 * * * *")], "end", "five fields"),
            (&[("end", "every day")], "end", "five fields"),
        ];
        for (changes, key, fragment) in schedules {
            let (k, v) = changes[0];
            let err = CronConfig::parse(&trigger(&with(k, v))).expect_err("refused");
            assert_eq!(err.key, key, "{changes:?}");
            assert!(
                err.problem.contains(fragment),
                "{changes:?}: {}",
                err.problem
            );
        }

        let mut t = trigger(&ok);
        t.metric_type = Some("Utilization".into());
        assert_eq!(CronConfig::parse(&t).unwrap_err().key, "metricType");
    }

    #[tokio::test]
    async fn reports_a_value_and_activity_now() {
        // Opened once a year, closed every minute: the next close always comes first, so the
        // window is open whenever this runs.
        let scaler = CronScaler::new(&trigger(&[
            ("timezone", "Etc/UTC"),
            ("start", "@yearly"),
            ("end", "* * * * *"),
            ("desiredReplicas", "7"),
        ]))
        .unwrap();
        let name = scaler.config.metric_name.clone();
        let answer = scaler.metrics_and_activity(&name).await.unwrap();
        assert!(answer.active);
        assert_eq!(
            answer.values,
            vec![MetricValue {
                name: name.clone(),
                value: 7.0
            }]
        );
        assert!(matches!(
            scaler.metrics_and_activity("s0-other").await,
            Err(ScalerError::UnknownMetric(_))
        ));
    }
}
