//! A Prometheus exporter the tests control: the dev cluster's Prometheus scrapes its `/metrics`,
//! and a test sets a series with one request, then waits a scrape interval to query it.
//!
//! - `GET /metrics`: every series set, in the Prometheus text format.
//! - `POST /set`: each line of the body is `<series> <value>`, for example
//!   `ebb_test_queue_depth{queue="orders"} 7`; it sets that series (name and labels as written).
//! - `POST /delete`: each line is a `<series>` to forget.
//!
//! Standard library only: it runs as `cargo xtask cluster exporter --port N` under the dev
//! cluster's pid files like every other service.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// Series by their name-and-labels text.
type Series = Arc<Mutex<BTreeMap<String, String>>>;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// Serves on 127.0.0.1:`port` until the process is stopped.
pub fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let series: Series = Arc::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let series = series.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &series);
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream, series: &Series) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length.min(MAX_BODY)];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body);
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, text) = answer(method, path, &body, series);
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

/// The status line and body for one request.
fn answer(method: &str, path: &str, body: &str, series: &Series) -> (&'static str, String) {
    let Ok(mut series) = series.lock() else {
        return ("500 Internal Server Error", String::new());
    };
    match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            series
                .iter()
                .map(|(name, value)| format!("{name} {value}\n"))
                .collect(),
        ),
        ("POST", "/set") => {
            for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let Some((name, value)) = line.rsplit_once(' ') else {
                    return (
                        "400 Bad Request",
                        format!("expected `<series> <value>`: {line}\n"),
                    );
                };
                if value.parse::<f64>().is_err() {
                    return ("400 Bad Request", format!("not a number: {value}\n"));
                }
                series.insert(name.trim().to_string(), value.to_string());
            }
            ("200 OK", String::new())
        }
        ("POST", "/delete") => {
            for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
                series.remove(line);
            }
            ("200 OK", String::new())
        }
        _ => ("404 Not Found", String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_set_listed_and_deleted() {
        let series: Series = Arc::default();
        assert_eq!(
            answer("POST", "/set", "a{q=\"x\"} 7\nb 1.5\n", &series).0,
            "200 OK"
        );
        assert_eq!(
            answer("GET", "/metrics", "", &series),
            ("200 OK", "a{q=\"x\"} 7\nb 1.5\n".to_string())
        );
        assert_eq!(answer("POST", "/set", "a{q=\"x\"} 9", &series).0, "200 OK");
        assert_eq!(answer("POST", "/delete", "b\n", &series).0, "200 OK");
        assert_eq!(
            answer("GET", "/metrics", "", &series).1,
            "a{q=\"x\"} 9\n".to_string()
        );
        assert_eq!(
            answer("POST", "/set", "c seven", &series).0,
            "400 Bad Request"
        );
        assert_eq!(answer("GET", "/other", "", &series).0, "404 Not Found");
    }
}
