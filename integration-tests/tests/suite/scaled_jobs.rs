//! ScaledJobs on the real apiserver and Job controller, with Redis and RabbitMQ as triggers.
//! kwok runs the pods: a Job's pod finishes after its `ebb.dev/job-runs-for` annotation, fails
//! when annotated `ebb.dev/job-outcome: failed`, and stays Pending when nothing can schedule it.
//! The test plays the workers where a worker would take an item from the queue.

use std::collections::BTreeSet;
use std::time::Duration;

use ebb_crds::ScaledJob;
use ebb_operator::jobs::decision::{self, Combined, Existing, Strategy};
use integration_tests::{TestEnv, ensure, eventually, setup, unique_name};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

/// A ScaledJob on Redis list `list` (one Job per item), whose Jobs' pods carry `pod` (kwok's
/// annotations, a node selector) and whose spec has `extra` merged in.
fn redis_scaled_job(env: &TestEnv, name: &str, list: &str, pod: Value, extra: Value) -> Value {
    let address = env.cluster.redis_url.trim_start_matches("redis://");
    let mut spec = json!({
        "jobTargetRef": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": pod.get("annotations").cloned().unwrap_or(json!({}))},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": pod.get("nodeSelector").cloned().unwrap_or(Value::Null),
                    "containers": [{"name": "worker", "image": "example.invalid/worker:1"}]
                }
            }
        },
        "pollingInterval": 1,
        "triggers": [{
            "type": "redis",
            "metadata": {"address": address, "listName": list, "listLength": "1", "databaseIndex": "11"}
        }]
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name},
        "spec": spec
    })
}

async fn jobs_of(env: &TestEnv, scaled_job: &str) -> Vec<Job> {
    env.api::<Job>()
        .list(&ListParams::default().labels(&format!("scaledjob.keda.sh/name={scaled_job}")))
        .await
        .expect("list Jobs")
        .items
}

fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

async fn redis(env: &TestEnv) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("{}/11", env.cluster.redis_url))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn push(conn: &mut redis::aio::MultiplexedConnection, list: &str, n: usize) {
    let items: Vec<String> = (0..n).map(|i| format!("item-{i}")).collect();
    let _: () = redis::cmd("RPUSH")
        .arg(list)
        .arg(&items)
        .query_async(conn)
        .await
        .expect("RPUSH");
}

async fn list_length(conn: &mut redis::aio::MultiplexedConnection, list: &str) -> i64 {
    redis::cmd("LLEN")
        .arg(list)
        .query_async(conn)
        .await
        .expect("LLEN")
}

/// Ok when ScaledJob `name`'s condition `type_` has `status`.
async fn condition(env: &TestEnv, name: &str, type_: &str, status: &str) -> Result<(), String> {
    let sj: ScaledJob = env.api().get(name).await.map_err(|e| e.to_string())?;
    let conditions = sj.status.and_then(|s| s.conditions).unwrap_or_default();
    ensure(
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status),
        || format!("{conditions:?}"),
    )
}

#[tokio::test]
async fn a_redis_list_of_ten_runs_as_jobs_four_at_a_time_until_it_is_empty() {
    let env = setup("sj-redis").await;
    let ebb = env.start_ebb();
    let list = unique_name("sj-items");
    let mut conn = redis(&env).await;
    push(&mut conn, &list, 10).await;
    env.create::<ScaledJob>(redis_scaled_job(
        &env,
        "encoder",
        &list,
        json!({"annotations": {"ebb.dev/job-runs-for": "2s"}}),
        json!({"maxReplicaCount": 4, "successfulJobsHistoryLimit": 20}),
    ))
    .await;

    // The test is the worker: each new Job takes one item when it appears.
    let mut seen = BTreeSet::new();
    let mut most_unfinished = 0;
    let started = tokio::time::Instant::now();
    loop {
        let jobs = jobs_of(&env, "encoder").await;
        let unfinished = jobs.iter().filter(|j| finished(j).is_none()).count();
        most_unfinished = most_unfinished.max(unfinished);
        for job in &jobs {
            if seen.insert(job.name_any()) {
                let _: Option<String> = redis::cmd("LPOP")
                    .arg(&list)
                    .query_async(&mut conn)
                    .await
                    .expect("LPOP");
            }
        }
        if seen.len() >= 10 && unfinished == 0 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "10 Jobs done: {} seen, {unfinished} unfinished",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        most_unfinished, 4,
        "never more than maxReplicaCount at once"
    );
    assert_eq!(list_length(&mut conn, &list).await, 0);

    // Nothing more once the list is empty and the Jobs are done; and idle polls write nothing.
    let idle_since = eventually("an idle poll recorded", DEADLINE, || async {
        let sj: ScaledJob = env.api().get("encoder").await.map_err(|e| e.to_string())?;
        let last = sj.status.and_then(|s| s.last_poll).ok_or("no lastPoll")?;
        ensure(
            (last.queue_length, last.running_jobs, last.jobs_created) == (0, 0, 0),
            || format!("{last:?}"),
        )?;
        Ok(last.time)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = jobs_of(&env, "encoder").await;
    assert_eq!(jobs.len(), 10, "one Job per item, none more");
    assert!(jobs.iter().all(|j| finished(j) == Some("Complete")));

    // The Jobs are KEDA's: labels, owner, generation, template label.
    let job = &jobs[0];
    assert!(job.name_any().starts_with("encoder-"));
    assert_eq!(job.labels()["scaledjob.keda.sh/name"], "encoder");
    assert_eq!(job.labels()["app.kubernetes.io/managed-by"], "ebb");
    assert_eq!(job.annotations()["scaledjob.keda.sh/generation"], "1");
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ScaledJob", "encoder")
    );
    assert_eq!(owner.controller, Some(true));

    // Status and Events as in KEDA.
    for (type_, status) in [("Ready", "True"), ("Active", "False")] {
        eventually(&format!("{type_}={status}"), DEADLINE, || async {
            condition(&env, "encoder", type_, status).await
        })
        .await;
    }
    let sj: ScaledJob = env.api().get("encoder").await.expect("get");
    let status = sj.status.expect("a status");
    assert!(status.last_active_time.is_some());
    assert_eq!(status.triggers_types.as_deref(), Some("redis"));
    let last = status.last_poll.expect("lastPoll");
    assert_eq!(last.time, idle_since, "three idle polls wrote nothing");
    env.await_event_reasons(
        "encoder",
        &[
            "KEDAScalersStarted",
            "KEDAJobsCreated",
            "ScaledJobActive",
            "ScaledJobInactive",
        ],
        DEADLINE,
    )
    .await;

    env.delete_scaled_jobs().await;
    drop(ebb);
}

/// The Jobs created at each poll, from the Jobs' creation times (polls 3 s apart).
fn per_poll(jobs: &[Job]) -> Vec<i64> {
    let mut times: Vec<i64> = jobs
        .iter()
        .filter_map(|j| j.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second())
        .collect();
    times.sort_unstable();
    let mut groups: Vec<i64> = Vec::new();
    let mut last: Option<i64> = None;
    for t in times {
        match last {
            Some(l) if t - l < 2 => *groups.last_mut().expect("a group") += 1,
            _ => groups.push(1),
        }
        last = Some(t);
    }
    groups
}

/// The Jobs each poll creates by the decision table, from `queue` items (never taken), until a
/// poll creates none: every Job keeps running, and is pending too when `pending`.
fn table(strategy: Strategy, queue: i64, max: i64, pending: bool) -> Vec<i64> {
    let (min, slots) = decision::bounds(None, Some(max as i32));
    let reading = decision::trigger_reading(&[queue as f64], &[1.0], true, slots);
    let combined: Combined = decision::combine(&[reading], decision::Calculation::Max, min, slots);
    let mut running = 0;
    let mut out = Vec::new();
    loop {
        let existing = Existing {
            running,
            pending: if pending { running } else { 0 },
        };
        let d = decision::decide(combined, strategy, existing, min, slots);
        if d.create == 0 {
            return out;
        }
        out.push(d.create);
        running += d.create;
    }
}

#[tokio::test]
async fn each_strategy_creates_what_its_decision_table_says_with_pending_and_running_pods() {
    let env = setup("sj-strategies").await;
    let ebb = env.start_ebb();
    let mut conn = redis(&env).await;
    let strategies = [
        ("default", json!({"strategy": "default"}), Strategy::Default),
        (
            "custom",
            json!({"strategy": "custom", "customScalingQueueLengthDeduction": 1, "customScalingRunningJobPercentage": "0.5"}),
            Strategy::Custom {
                queue_length_deduction: 1,
                running_job_percentage: 0.5,
            },
        ),
        (
            "accurate",
            json!({"strategy": "accurate"}),
            Strategy::Accurate,
        ),
        ("eager", json!({"strategy": "eager"}), Strategy::Eager),
    ];
    // Pending: no node matches the selector. Running: the pods run for an hour.
    let modes = [
        (
            "pending",
            json!({"nodeSelector": {"ebb.dev/no-such-node": "x"}}),
            true,
        ),
        (
            "running",
            json!({"annotations": {"ebb.dev/job-runs-for": "1h"}}),
            false,
        ),
    ];
    let mut expected = Vec::new();
    for (strategy_name, strategy, table_strategy) in &strategies {
        for (mode, pod, pending) in &modes {
            let name = format!("{strategy_name}-{mode}");
            let list = unique_name(&format!("sj-{name}"));
            push(&mut conn, &list, 6).await;
            env.create::<ScaledJob>(redis_scaled_job(
                &env,
                &name,
                &list,
                pod.clone(),
                json!({"maxReplicaCount": 10, "pollingInterval": 3, "scalingStrategy": strategy}),
            ))
            .await;
            expected.push((name, table(*table_strategy, 6, 10, *pending)));
        }
    }
    // The tables, as KEDA's formulas give them for a queue of 6 and maxReplicaCount 10.
    let totals: Vec<(String, i64)> = expected
        .iter()
        .map(|(n, t)| (n.clone(), t.iter().sum()))
        .collect();
    assert_eq!(
        totals.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        vec![6, 6, 10, 10, 10, 10, 6, 10],
        "{totals:?}"
    );
    for (name, table) in &expected {
        let total: i64 = table.iter().sum();
        let jobs = eventually(&format!("{name}: {total} Jobs"), DEADLINE, || async {
            let jobs = jobs_of(&env, name).await;
            ensure(jobs.len() as i64 >= total, || {
                format!("{} Jobs", jobs.len())
            })?;
            Ok(jobs)
        })
        .await;
        // Two more polls: no more Jobs.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let jobs_after = jobs_of(&env, name).await;
        assert_eq!(
            jobs_after.len(),
            jobs.len(),
            "{name}: no Job beyond the table"
        );
        if name.ends_with("-pending") {
            // Every Job counts as pending from its creation: each poll is exactly the table's.
            assert_eq!(&per_poll(&jobs_after), table, "{name}: Jobs per poll");
        } else {
            // How many pods run by the next poll depends on the scheduler and kwok: the total is
            // the table's (a poll that saw pending pods creates less, and the next one the rest).
            assert_eq!(jobs_after.len() as i64, total, "{name}: Jobs");
        }
    }
    env.delete_scaled_jobs().await;
    drop(ebb);
}

#[tokio::test]
async fn history_limits_keep_the_newest_finished_jobs() {
    let env = setup("sj-history").await;
    let ebb = env.start_ebb();
    let mut conn = redis(&env).await;
    // The item is never taken: each poll after a Job ends creates another. Five ended Jobs
    // are created; two of each outcome are kept, the newest. (Polls 2 s apart: the Jobs'
    // times, which order them, are in whole seconds.) Each ScaledJob is created when it is
    // watched, so its first Job is seen as the only one.
    for (name, pod, outcome) in [
        ("succeeds", json!({}), "Complete"),
        (
            "fails",
            json!({"annotations": {"ebb.dev/job-outcome": "failed"}}),
            "Failed",
        ),
    ] {
        let list = unique_name(&format!("sj-{name}"));
        push(&mut conn, &list, 1).await;
        env.create::<ScaledJob>(redis_scaled_job(
            &env,
            name,
            &list,
            pod,
            json!({"maxReplicaCount": 1, "pollingInterval": 2, "successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 2}),
        ))
        .await;
        let first = eventually(&format!("{name}: a first Job"), DEADLINE, || async {
            let jobs = jobs_of(&env, name).await;
            ensure(jobs.len() == 1, || format!("{} Jobs", jobs.len()))?;
            Ok(jobs[0].name_any())
        })
        .await;
        let mut ever = BTreeSet::new();
        let started = tokio::time::Instant::now();
        loop {
            let jobs = jobs_of(&env, name).await;
            ever.extend(jobs.iter().map(ResourceExt::name_any));
            let ended = jobs.iter().filter(|j| finished(j) == Some(outcome)).count();
            if ever.len() >= 5 && ended == 2 {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{name}: {} created, {ended} kept",
                ever.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let oldest = first;
        let kept: Vec<String> = jobs_of(&env, name)
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let detail: Vec<String> = jobs_of(&env, name)
            .await
            .iter()
            .map(|j| {
                format!(
                    "{} created {:?} completed {:?} {:?}",
                    j.name_any(),
                    j.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    j.status
                        .as_ref()
                        .and_then(|s| s.completion_time.as_ref())
                        .map(|t| t.0),
                    finished(j)
                )
            })
            .collect();
        assert!(
            !kept.contains(&oldest),
            "{name}: the oldest Job {oldest} was deleted: {detail:#?}"
        );
    }
    env.delete_scaled_jobs().await;
    drop(ebb);
}

#[tokio::test]
async fn a_changed_template_replaces_running_jobs_or_lets_them_finish() {
    let env = setup("sj-rollout").await;
    let ebb = env.start_ebb();
    let mut conn = redis(&env).await;
    for (name, rollout, runs_for) in [
        ("default", json!({}), "1h"),
        ("gradual", json!({"strategy": "gradual"}), "8s"),
    ] {
        let list = unique_name(&format!("sj-{name}"));
        push(&mut conn, &list, 2).await;
        env.create::<ScaledJob>(redis_scaled_job(
            &env,
            name,
            &list,
            json!({"annotations": {"ebb.dev/job-runs-for": runs_for}}),
            json!({"maxReplicaCount": 2, "rollout": rollout}),
        ))
        .await;
    }
    let generation_of = |j: &Job| j.annotations()["scaledjob.keda.sh/generation"].clone();
    let mut first = std::collections::BTreeMap::new();
    for name in ["default", "gradual"] {
        let jobs = eventually(&format!("{name}: 2 Jobs"), DEADLINE, || async {
            let jobs = jobs_of(&env, name).await;
            ensure(jobs.len() == 2, || format!("{} Jobs", jobs.len()))?;
            Ok(jobs)
        })
        .await;
        first.insert(
            name,
            jobs.iter()
                .map(ResourceExt::name_any)
                .collect::<BTreeSet<_>>(),
        );
        // A new template: an environment variable.
        env.api::<ScaledJob>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Json::<()>(
                    serde_json::from_value(json!([{
                        "op": "add",
                        "path": "/spec/jobTargetRef/template/spec/containers/0/env",
                        "value": [{"name": "VERSION", "value": "2"}]
                    }]))
                    .expect("a patch"),
                ),
            )
            .await
            .expect("patch");
    }
    // default: the old Jobs go at once and two Jobs of generation 2 replace them.
    eventually("default: the old Jobs replaced", DEADLINE, || async {
        let jobs = jobs_of(&env, "default").await;
        let names: BTreeSet<String> = jobs.iter().map(ResourceExt::name_any).collect();
        ensure(
            names.is_disjoint(&first["default"])
                && jobs.len() == 2
                && jobs.iter().all(|j| generation_of(j) == "2"),
            || {
                format!(
                    "{:?}",
                    jobs.iter()
                        .map(|j| (j.name_any(), generation_of(j)))
                        .collect::<Vec<_>>()
                )
            },
        )
    })
    .await;
    // gradual: the old Jobs run to their end, and only then new ones start, from generation 2.
    let old_jobs = jobs_of(&env, "gradual").await;
    assert!(
        old_jobs
            .iter()
            .all(|j| first["gradual"].contains(&j.name_any())),
        "no new Job while the old ones run"
    );
    eventually(
        "gradual: new Jobs after the old ones completed",
        DEADLINE,
        || async {
            let jobs = jobs_of(&env, "gradual").await;
            let old: Vec<&Job> = jobs
                .iter()
                .filter(|j| first["gradual"].contains(&j.name_any()))
                .collect();
            let new: Vec<&Job> = jobs
                .iter()
                .filter(|j| !first["gradual"].contains(&j.name_any()))
                .collect();
            ensure(
                old.len() == 2
                    && old.iter().all(|j| finished(j) == Some("Complete"))
                    && new.len() == 2
                    && new.iter().all(|j| generation_of(j) == "2"),
                || {
                    format!(
                        "old {:?}, new {}",
                        old.iter().map(|j| finished(j)).collect::<Vec<_>>(),
                        new.len()
                    )
                },
            )
        },
    )
    .await;
    env.await_event_reasons(
        "default",
        &[
            "ScaledJobRolloutCleanupStarted",
            "ScaledJobRolloutCleanupCompleted",
        ],
        DEADLINE,
    )
    .await;
    env.delete_scaled_jobs().await;
    drop(ebb);
}

#[tokio::test]
async fn a_rabbitmq_queue_starts_one_job_per_message() {
    let env = setup("sj-rabbitmq").await;
    let ebb = env.start_ebb();
    let amqp = env.amqp().await;
    let queue = unique_name("sj-tasks");
    amqp.declare(&queue).await;
    amqp.publish(&queue, 3).await;
    env.create::<ScaledJob>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "tasks"},
        "spec": {
            "jobTargetRef": {"template": {
                "metadata": {"annotations": {"ebb.dev/job-runs-for": "1h"}},
                "spec": {"containers": [{"name": "w", "image": "example.invalid/w:1"}]}
            }},
            "pollingInterval": 1,
            "maxReplicaCount": 10,
            "triggers": [{"type": "rabbitmq", "metadata": {
                "host": env.cluster.rabbitmq_amqp_url, "queueName": queue, "mode": "QueueLength", "value": "1"
            }}]
        }
    }))
    .await;
    eventually("3 Jobs", DEADLINE, || async {
        let jobs = jobs_of(&env, "tasks").await;
        ensure(jobs.len() == 3, || format!("{} Jobs", jobs.len()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        jobs_of(&env, "tasks").await.len(),
        3,
        "one Job per message, no more"
    );

    // `ebb explain` says why: three messages ask for three Jobs, and three run.
    let out = std::process::Command::new(integration_tests::ebb_binary())
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(["explain", &format!("{}/tasks", env.namespace)])
        .output()
        .expect("ebb explain");
    let text = integration_tests::expect_success(&out, "ebb explain");
    for line in [
        format!(
            "ScaledJob {}/tasks: minReplicaCount 0, maxReplicaCount 10",
            env.namespace
        ),
        "trigger 0 (rabbitmq): queue 3, asks 3 Jobs".to_string(),
        "Jobs counted: 3 running".to_string(),
        "strategy default: 3 asked - 3 running = 0 more allowed".to_string(),
        "Decision: every Job asked for exists already: none created".to_string(),
        "Jobs now: 3 running, 0 succeeded and 0 failed kept".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    amqp.purge(&queue).await;
    env.delete_scaled_jobs().await;
    drop(ebb);
}

#[tokio::test]
async fn a_paused_scaled_job_creates_nothing_and_a_bad_one_is_reported() {
    let env = setup("sj-pause").await;
    let ebb = env.start_ebb();
    let mut conn = redis(&env).await;
    let list = unique_name("sj-paused");
    push(&mut conn, &list, 3).await;
    let mut manifest = redis_scaled_job(
        &env,
        "held",
        &list,
        json!({"annotations": {"ebb.dev/job-runs-for": "1h"}}),
        json!({}),
    );
    manifest["metadata"]["annotations"] = json!({"autoscaling.keda.sh/paused": "true"});
    env.create::<ScaledJob>(manifest).await;
    let mut bad = redis_scaled_job(&env, "bad", &list, json!({}), json!({}));
    bad["spec"]["triggers"][0]["metricType"] = json!("Value");
    env.create::<ScaledJob>(bad).await;

    eventually("held is Paused", DEADLINE, || async {
        condition(&env, "held", "Paused", "True").await
    })
    .await;
    let reason = eventually("bad is not Ready", DEADLINE, || async {
        let sj: ScaledJob = env.api().get("bad").await.map_err(|e| e.to_string())?;
        let c = sj
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False");
        c.ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(reason.reason.as_deref(), Some("ScaledJobCheckFailed"));
    assert!(
        reason
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("spec.triggers[0].metricType:"),
        "{reason:?}"
    );
    env.await_event_reasons("bad", &["ScaledJobCheckFailed"], DEADLINE)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(jobs_of(&env, "held").await.is_empty(), "paused: no Job");

    // Unpaused: the three items start three Jobs.
    env.api::<ScaledJob>()
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": "false"}}}),
            ),
        )
        .await
        .expect("unpause");
    eventually("3 Jobs once unpaused", DEADLINE, || async {
        let n = jobs_of(&env, "held").await.len();
        ensure(n == 3, || format!("{n} Jobs"))
    })
    .await;
    condition(&env, "held", "Paused", "False")
        .await
        .expect("Paused=False once unpaused");
    env.await_event_reasons("held", &["ScaledJobPaused", "ScaledJobUnpaused"], DEADLINE)
        .await;
    env.delete_scaled_jobs().await;
    drop(ebb);
}

#[tokio::test]
async fn ebb_killed_and_restarted_creates_no_duplicate_jobs() {
    let env = setup("sj-restart").await;
    let mut conn = redis(&env).await;
    let list = unique_name("sj-restart");
    push(&mut conn, &list, 5).await;
    let start = || {
        let (mut cmd, _admin) = integration_tests::ebb_run_command(&env);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ebb run")
    };
    let mut ebb = start();
    env.create::<ScaledJob>(redis_scaled_job(
        &env,
        "restart",
        &list,
        json!({"annotations": {"ebb.dev/job-runs-for": "1h"}}),
        json!({"maxReplicaCount": 10}),
    ))
    .await;
    // Killed as soon as the first Job exists: in the middle of the poll that creates them, or
    // just after it.
    eventually("a first Job", DEADLINE, || async {
        let n = jobs_of(&env, "restart").await.len();
        ensure(n > 0, || "none yet".into())
    })
    .await;
    ebb.kill().expect("kill -9");
    let _ = ebb.wait();
    let before = jobs_of(&env, "restart").await.len();
    let mut ebb = start();
    eventually("5 Jobs", DEADLINE, || async {
        let n = jobs_of(&env, "restart").await.len();
        ensure(n >= 5, || format!("{n} Jobs ({before} when killed)"))
    })
    .await;
    // Three more polls with the restarted ebb; then killed and restarted again, three more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ebb.kill().expect("kill -9");
    let _ = ebb.wait();
    let mut ebb = start();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        jobs_of(&env, "restart").await.len(),
        5,
        "one Job per item across restarts ({before} when first killed)"
    );
    env.delete_scaled_jobs().await;
    ebb.kill().expect("kill");
    let _ = ebb.wait();
}

#[tokio::test]
async fn a_failing_trigger_creates_no_job_and_is_reported() {
    let env = setup("sj-failing").await;
    let ebb = env.start_ebb();
    let mut conn = redis(&env).await;
    let list = unique_name("sj-failing");
    push(&mut conn, &list, 2).await;
    // Alone: nothing can be read, so nothing is created; Ready=False (TriggerError).
    let mut alone = redis_scaled_job(&env, "alone", &list, json!({}), json!({}));
    alone["spec"]["triggers"][0]["metadata"]["address"] = json!(integration_tests::dead_address());
    env.create::<ScaledJob>(alone).await;
    // Beside a working trigger: the working one decides (2 Jobs for 2 items); the failing one
    // adds none, even under `sum`; Ready=Unknown (PartialTriggerError).
    let mut beside = redis_scaled_job(
        &env,
        "beside",
        &list,
        json!({"annotations": {"ebb.dev/job-runs-for": "1h"}}),
        json!({"scalingStrategy": {"multipleScalersCalculation": "sum"}}),
    );
    let mut dead = beside["spec"]["triggers"][0].clone();
    dead["metadata"]["address"] = json!(integration_tests::dead_address());
    beside["spec"]["triggers"]
        .as_array_mut()
        .expect("triggers")
        .push(dead);
    env.create::<ScaledJob>(beside).await;

    eventually("alone: Ready=False", DEADLINE, || async {
        condition(&env, "alone", "Ready", "False").await
    })
    .await;
    eventually("beside: Ready=Unknown", DEADLINE, || async {
        condition(&env, "beside", "Ready", "Unknown").await
    })
    .await;
    eventually("beside: 2 Jobs", DEADLINE, || async {
        let n = jobs_of(&env, "beside").await.len();
        ensure(n == 2, || format!("{n} Jobs"))
    })
    .await;
    env.await_event_reasons("alone", &["KEDAScalerFailed"], DEADLINE)
        .await;
    // Three more polls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        jobs_of(&env, "alone").await.is_empty(),
        "an error creates no Job"
    );
    assert_eq!(
        jobs_of(&env, "beside").await.len(),
        2,
        "the failing trigger adds none"
    );
    let sj: ScaledJob = env.api().get("beside").await.expect("get");
    let poll = sj.status.and_then(|s| s.last_poll).expect("lastPoll");
    let triggers = poll.triggers.clone().unwrap_or_default();
    assert!(triggers[1].error.is_some(), "{poll:?}");
    assert_eq!(triggers[0].queue_length, Some(2.0), "{poll:?}");
    env.delete_scaled_jobs().await;
    drop(ebb);
}
