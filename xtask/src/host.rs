//! Helpers for the commands that drive the dev cluster from the host (`demo`, `bench`):
//! kubectl, redis-cli, a small HTTP client and a child process stopped on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use xtask::cluster::{ClusterInfo, ports};

/// The dev cluster's kubectl with its admin kubeconfig.
pub(crate) fn kubectl(info: &ClusterInfo) -> Command {
    let mut cmd = Command::new(&info.kubectl);
    cmd.arg(format!("--kubeconfig={}", info.kubeconfig.display()));
    cmd
}

/// `kubectl apply --server-side` of a file or folder.
pub(crate) fn apply(info: &ClusterInfo, path: &Path) -> Result<()> {
    let out = kubectl(info)
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply -f {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A Child killed (SIGTERM, then waited for) on drop.
pub(crate) struct Ebb(pub(crate) Child);

impl Drop for Ebb {
    fn drop(&mut self) {
        let pid = i32::try_from(self.0.id()).unwrap_or(0);
        // Its process group too, when it leads one (a profiler wrapping ebb in the benchmark).
        if pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// Runs `cargo ARGS` in the workspace root with extra environment variables; fails naming the
/// command when it does.
pub(crate) fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(xtask::workspace_root())
        .status()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the debug `ebb` binary that integration tests run as a separate process.
pub(crate) fn build_ebb_binary() -> Result<()> {
    cargo(
        &[
            "build",
            "--locked",
            "--package",
            "ebb-operator",
            "--bin",
            "ebb",
        ],
        &[],
    )
}

/// Whether any dev cluster service is running: then it belongs to someone (a developer's
/// cluster), and a command that did not start it leaves it up.
pub(crate) fn cluster_was_running() -> bool {
    let layout = xtask::cluster::Layout::for_workspace();
    xtask::cluster::services::status(&layout)
        .iter()
        .any(|(_, state)| state.is_some())
}

/// Cargo's target directory for this workspace.
pub(crate) fn cargo_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Polls `check` every 250 ms until it gives a value, or fails after `deadline`.
pub(crate) fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("{what}: not within {}s", deadline.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `redis-cli` against the dev cluster's standalone Redis; the output is discarded.
pub(crate) fn redis(args: &[&str]) -> Result<()> {
    redis_output(args).map(|_| ())
}

/// Runs `redis-cli` on the dev cluster's Redis and returns its answer.
pub(crate) fn redis_output(args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &ports::REDIS.to_string()])
        .args(args)
        .output()
        .context("running redis-cli")?;
    if !out.status.success() {
        bail!(
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A small HTTP/1.1 request on loopback (RabbitMQ's management API as guest, ebb's admin port).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = base64::engine::general_purpose::STANDARD.encode("guest:guest");
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let text = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, text))
}

/// The body of a chunked HTTP/1.1 response (Go servers chunk large ones, KEDA's `/metrics`
/// among them); whatever cannot be parsed ends it.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..n), rest.get(n..)) else {
            out.push_str(rest);
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        body = after.strip_prefix("\r\n").unwrap_or(after);
    }
    out
}

/// Builds the `ebb` binary (`release` or dev profile) and returns its path.
pub(crate) fn build_ebb(release: bool) -> Result<PathBuf> {
    let root = xtask::workspace_root();
    let profile = if release { " --release" } else { "" };
    println!("==> building ebb (cargo build{profile} -p ebb-operator --bin ebb)");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.arg("build");
    if release {
        cargo.arg("--release");
    }
    // BENCH_EBB_FEATURES: features of the benchmarked build (`system-allocator`, for a heap
    // profiler that intercepts malloc).
    if let Ok(features) = std::env::var("BENCH_EBB_FEATURES") {
        cargo.args(["--features", &features]);
    }
    // Cargo's own output ("Compiling ...", and its progress bar on a terminal) goes to the
    // terminal: nothing reads it, and the build can take minutes.
    let status = cargo
        .args(["--package", "ebb-operator", "--bin", "ebb"])
        .current_dir(&root)
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()?;
    if !status.success() {
        bail!("building ebb failed ({status})");
    }
    let dir = if release { "release" } else { "debug" };
    Ok(cargo_target_dir(&root).join(dir).join("ebb"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunked_body_is_joined() {
        let body = "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        assert_eq!(super::dechunk(body), "hello, world");
        // A line split across chunks comes back whole.
        assert_eq!(super::dechunk("3\r\na b\r\n2\r\n 1\r\n0\r\n\r\n"), "a b 1");
    }
}
