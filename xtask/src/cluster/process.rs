//! Starting, finding and stopping the cluster's processes by pid file.
//!
//! Each service runs in a process group of its own whose leader's pid is written to
//! `pids/<name>.pid`. Stopping signals the whole group, so wrapper scripts (RabbitMQ's) and their
//! children go together, and nothing that `up` did not start is ever touched.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::Layout;

/// Starts `cmd` as service `name`: own process group, output appended to its log, pid recorded.
pub fn spawn(layout: &Layout, name: &str, mut cmd: Command) -> Result<u32> {
    let log_path = layout.log(name);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    let pid = child.id();
    // The start time pins the pid to this process: a later process reusing the number is
    // never mistaken for the service (and never signalled).
    let started = proc_stat(pid).map(|s| s.start_time).unwrap_or_default();
    fs::write(layout.pid_file(name), format!("{pid} {started}\n"))?;
    // The child is deliberately not waited for: it outlives this command, and `down` stops it.
    drop(child);
    Ok(pid)
}

/// The recorded process group of `name`, if any of its processes is still alive.
pub fn running(layout: &Layout, name: &str) -> Option<u32> {
    let pgid = recorded_pid(layout, name)?;
    (!live_members(pgid).is_empty()).then_some(pgid)
}

/// The recorded group id, if the record still describes the process `spawn` started.
///
/// While the leader lives its start time must match. Once it has exited, Linux does not hand
/// its number to a new process as long as the group still has members, so the group id alone
/// identifies whatever is left of the service.
fn recorded_pid(layout: &Layout, name: &str) -> Option<u32> {
    let text = fs::read_to_string(layout.pid_file(name)).ok()?;
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let recorded_start: u64 = fields.next()?.parse().ok()?;
    match proc_stat(pid) {
        Some(stat) if stat.start_time != recorded_start => {
            // The number now belongs to another process: the record is stale.
            let _ = fs::remove_file(layout.pid_file(name));
            None
        }
        _ => Some(pid),
    }
}

/// Stops service `name` (SIGTERM to its group, SIGKILL after `grace`). Returns whether it ran.
pub fn stop(layout: &Layout, name: &str, grace: Duration) -> Result<bool> {
    let Some(pgid) = recorded_pid(layout, name) else {
        return Ok(false);
    };
    let was_running = !live_members(pgid).is_empty();
    if was_running {
        signal_group(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while !live_members(pgid).is_empty() && Instant::now() < deadline {
            sleep(Duration::from_millis(100));
        }
        if !live_members(pgid).is_empty() {
            signal_group(pgid, Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !live_members(pgid).is_empty() {
                if Instant::now() > deadline {
                    bail!("{name} (process group {pgid}) survived SIGKILL");
                }
                sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = fs::remove_file(layout.pid_file(name));
    Ok(was_running)
}

fn signal_group(pgid: u32, signal: Signal) {
    // ESRCH only means the group is already gone.
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
}

/// Live (not zombie) processes whose process group is `pgid`, read from /proc.
///
/// Zombies are skipped because an orphaned child may never be reaped in a container whose init
/// does not reap, yet it holds no resources.
pub fn live_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            proc_stat(*pid).is_some_and(|st| st.pgrp == pgid && st.state != 'Z' && st.state != 'X')
        })
        .collect()
}

/// What `/proc/<pid>/stat` says about a process.
struct ProcStat {
    state: char,
    pgrp: u32,
    /// Clock ticks after boot at which the process started.
    start_time: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')',
    // starting with field 3 (state); start time is field 22.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcStat {
        state: rest.first()?.chars().next()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Polls `check` until it returns true or `timeout` passes; the error names `what`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} was not ready within {}s", timeout.as_secs());
        }
        sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_layout(name: &str) -> Layout {
        let root =
            std::env::temp_dir().join(format!("ebb-process-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("pids")).unwrap();
        fs::create_dir_all(root.join("logs")).unwrap();
        Layout { root }
    }

    #[test]
    fn spawn_running_stop_round_trip() {
        let layout = scratch_layout("round-trip");
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        let pid = spawn(&layout, "sleeper", cmd).unwrap();
        assert_eq!(running(&layout, "sleeper"), Some(pid));
        assert!(stop(&layout, "sleeper", Duration::from_secs(5)).unwrap());
        assert_eq!(running(&layout, "sleeper"), None);
        assert!(!layout.pid_file("sleeper").exists());
        assert!(
            !stop(&layout, "sleeper", Duration::from_secs(1)).unwrap(),
            "nothing left to stop"
        );
    }

    #[test]
    fn a_reused_pid_is_never_taken_for_the_service_or_signalled() {
        let layout = scratch_layout("reuse");
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        let pid = spawn(&layout, "sleeper", cmd).unwrap();
        // The same number, but a different start time: as if the service died and another
        // process got its pid.
        let start = proc_stat(pid).unwrap().start_time;
        fs::write(layout.pid_file("sleeper"), format!("{pid} {}\n", start + 1)).unwrap();
        assert_eq!(running(&layout, "sleeper"), None);
        assert!(!stop(&layout, "sleeper", Duration::from_secs(1)).unwrap());
        assert!(
            !live_members(pid).is_empty(),
            "the process behind a stale record must not be signalled"
        );
        // Clean up the real sleeper.
        fs::write(layout.pid_file("sleeper"), format!("{pid} {start}\n")).unwrap();
        assert!(stop(&layout, "sleeper", Duration::from_secs(5)).unwrap());
        let _ = fs::remove_dir_all(&layout.root);
    }
}
