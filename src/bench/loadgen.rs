//! The HTTP load generator of the benchmarks, run as a **separate
//! process** (`calsync bench load-gen`, hidden, spawned as a child the way
//! pgbench is) so that a ratio against pgbench compares two servers, not a
//! server plus its client against a server alone. The same code can run in
//! process (when no executable is given, e.g. from a library test).
//!
//! The parent writes a [`LoadSpec`] as JSON to the child's stdin; the child
//! sends the requests and prints a [`LoadResult`] as JSON on stdout.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One kind of request, sent round-robin with the others. Every `{n}` in
/// a header value or the body becomes the request's sequence number
/// (distinct over the whole run, from [`LoadSpec::counter_start`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestTemplate {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// What to send, how hard and for how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    /// POSTed round-robin by sequence number.
    pub requests: Vec<RequestTemplate>,
    /// Concurrent clients (each with its own keep-alive connection).
    pub concurrency: usize,
    pub seconds: f64,
    pub counter_start: u64,
    /// `None`: closed loop, each client sends its next request when the
    /// previous one is answered (throughput). `Some(r)`: open loop at `r`
    /// requests/s over all clients, latency counted from the scheduled
    /// send time, so a slow answer is not hidden by a later send.
    pub rate: Option<f64>,
}

/// What the load generator measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers and failed requests.
    pub errors: u64,
    pub seconds: f64,
    /// Latency of every 2xx answer, ms, in completion order per client.
    pub latencies_ms: Vec<f64>,
    /// The next unused sequence number.
    pub counter_end: u64,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Where the load generator runs.
#[derive(Debug, Clone)]
pub enum LoadGen {
    /// A child process: this executable (`calsync`) with `bench load-gen`.
    Process(PathBuf),
    /// In this process (tests of the library, where no binary is at hand).
    InProcess,
}

impl LoadGen {
    /// The running `calsync` binary as the load generator.
    pub fn this_binary() -> anyhow::Result<LoadGen> {
        Ok(LoadGen::Process(
            std::env::current_exe().context("locating the calsync binary for load-gen")?,
        ))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            LoadGen::Process(_) => {
                "separate process (calsync bench load-gen: a minimal keep-alive HTTP/1.1 client)"
            }
            LoadGen::InProcess => "in the server's process (the same minimal HTTP/1.1 client)",
        }
    }

    /// Runs `spec` and returns what it measured.
    pub async fn run(&self, spec: &LoadSpec) -> anyhow::Result<LoadResult> {
        match self {
            LoadGen::InProcess => generate(spec).await,
            LoadGen::Process(exe) => {
                let mut child = tokio::process::Command::new(exe)
                    .args(["bench", "load-gen"])
                    .env("RUST_LOG", "off")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {} bench load-gen", exe.display()))?;
                let mut stdin = child.stdin.take().context("load-gen has no stdin")?;
                stdin.write_all(&serde_json::to_vec(spec)?).await?;
                drop(stdin);
                let out = child.wait_with_output().await?;
                if !out.status.success() {
                    anyhow::bail!(
                        "load-gen failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                serde_json::from_slice(&out.stdout).with_context(|| {
                    format!(
                        "load-gen printed no result: {}",
                        String::from_utf8_lossy(&out.stdout)
                    )
                })
            }
        }
    }
}

/// The child's side: a spec on stdin, the result on stdout.
pub async fn serve_stdio() -> anyhow::Result<()> {
    let mut input = Vec::new();
    tokio::io::stdin().read_to_end(&mut input).await?;
    let spec: LoadSpec = serde_json::from_slice(&input).context("load-gen spec on stdin")?;
    let result = generate(&spec).await?;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(&serde_json::to_vec(&result)?).await?;
    stdout.flush().await?;
    Ok(())
}

/// Sends `spec`'s requests and measures them.
///
/// The client is a minimal HTTP/1.1 one over keep-alive TCP connections:
/// requests rendered from their templates, answers read up to their
/// `Content-Length` (or last chunk). pgbench is a lean C client that
/// costs PostgreSQL's machine little; a general-purpose HTTP client
/// (reqwest, hyper) costs several times what the server spends on a small
/// request, which on a shared 2-core machine measured the client, not
/// calsync.
pub async fn generate(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(!spec.requests.is_empty(), "load-gen: no requests");
    let concurrency = spec.concurrency.max(1);
    let mut prepared: Vec<Prepared> = spec
        .requests
        .iter()
        .map(Prepared::new)
        .collect::<anyhow::Result<_>>()?;
    // Each distinct address gets a slot for its connection.
    let mut slots: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for p in &mut prepared {
        let next = slots.len();
        p.slot = *slots.entry(p.address.clone()).or_insert(next);
    }
    let addresses = slots.len();
    let requests: Arc<Vec<Prepared>> = Arc::new(prepared);
    let counter = Arc::new(AtomicU64::new(spec.counter_start));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(spec.seconds.max(0.001));
    // Open loop: worker `w` sends its k-th request at start + (k·c + w) / rate.
    let interval = spec
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(concurrency as f64 / r));
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (requests, counter) = (requests.clone(), counter.clone());
        let offset = interval.map(|i| i.mul_f64(w as f64 / concurrency as f64));
        workers.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
            let mut connections: Vec<Option<Connection>> = (0..addresses).map(|_| None).collect();
            let mut k = 0u32;
            loop {
                let scheduled = match (interval, offset) {
                    (Some(i), Some(o)) => {
                        let at = start + o + i * k;
                        k += 1;
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    _ => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        now
                    }
                };
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let request = &requests[(n as usize) % requests.len()];
                let bytes = request.render(n);
                // One keep-alive connection per address: templates may
                // point at several servers (bench scale's nodes).
                let connection = &mut connections[request.slot];
                let answer = match connection.as_mut() {
                    Some(c) => c.exchange(&bytes).await,
                    None => match Connection::open(&request.address).await {
                        Ok(c) => connection.insert(c).exchange(&bytes).await,
                        Err(e) => Err(e),
                    },
                };
                if let Ok((_, false)) = answer {
                    *connection = None;
                }
                match answer {
                    Ok((status, _)) if (200..300).contains(&status) => {
                        ok += 1;
                        latencies.push(scheduled.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        // The connection's state is unknown: start afresh.
                        *connection = None;
                    }
                }
            }
            (ok, errors, latencies)
        }));
    }
    let mut result = LoadResult::default();
    for w in workers {
        let (ok, errors, latencies) = w.await?;
        result.ok += ok;
        result.errors += errors;
        result.latencies_ms.extend(latencies);
    }
    result.seconds = start.elapsed().as_secs_f64();
    result.counter_end = counter.load(Ordering::Relaxed);
    Ok(result)
}

/// A template split around its `{n}` placeholders, ready to render.
struct Prepared {
    address: String,
    /// Index of `address` among the spec's distinct addresses.
    slot: usize,
    /// The request's bytes between placeholders (head and body rendered
    /// separately: the body's length goes into the head).
    head: Vec<String>,
    body: Vec<String>,
}

impl Prepared {
    fn new(t: &RequestTemplate) -> anyhow::Result<Prepared> {
        let rest = t
            .url
            .strip_prefix("http://")
            .context("load-gen speaks plain http:// only")?;
        let (address, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: {address}\r\n");
        for (name, value) in &t.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        Ok(Prepared {
            address: address.to_string(),
            slot: 0,
            head: head.split("{n}").map(str::to_string).collect(),
            body: t
                .body
                .as_deref()
                .unwrap_or("")
                .split("{n}")
                .map(str::to_string)
                .collect(),
        })
    }

    fn render(&self, n: u64) -> Vec<u8> {
        let number = n.to_string();
        let body = self.body.join(&number);
        let mut out = self.head.join(&number);
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        out.push_str(&body);
        out.into_bytes()
    }
}

/// One keep-alive connection and what has been read past the last answer.
struct Connection {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(address: &str) -> std::io::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `request` and reads the whole answer: its status, and whether
    /// the connection stays open.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, bool)> {
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(i) = find(&self.buffer, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).map_err(invalid)?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim(), value.trim());
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.parse::<usize>().map_err(invalid)?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        self.buffer.drain(..head_end);
        match (length, chunked) {
            (Some(length), false) => self.skip(length).await?,
            (_, true) => loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buffer, b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = std::str::from_utf8(&self.buffer[..line_end]).map_err(invalid)?;
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(invalid)?;
                self.buffer.drain(..line_end + 2);
                // The chunk and its CRLF (the last chunk: just the CRLF).
                self.skip(size + 2).await?;
                if size == 0 {
                    break;
                }
            },
            (None, false) => return Err(invalid("an answer without a length")),
        }
        Ok((status, !close))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Consumes `n` bytes of the answer.
    async fn skip(&mut self, n: usize) -> std::io::Result<()> {
        while self.buffer.len() < n {
            self.fill().await?;
        }
        self.buffer.drain(..n);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering every request 200 with an empty body; how many
    /// requests it answered.
    async fn counting_server() -> (String, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let answered = Arc::new(AtomicU64::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        while let Some(i) = find(&buffer, b"\r\n\r\n") {
                            buffer.drain(..i + 4);
                            count.fetch_add(1, Ordering::Relaxed);
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                            if stream.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, answered)
    }

    #[tokio::test]
    async fn requests_for_several_addresses_reach_each_of_them() {
        let (a, at_a) = counting_server().await;
        let (b, at_b) = counting_server().await;
        let template = |address: &str| RequestTemplate {
            url: format!("http://{address}/webhooks/google"),
            headers: vec![],
            body: None,
        };
        let result = generate(&LoadSpec {
            requests: vec![template(&a), template(&b)],
            concurrency: 1,
            seconds: 0.3,
            counter_start: 0,
            rate: None,
        })
        .await
        .unwrap();
        assert_eq!(result.errors, 0);
        let (at_a, at_b) = (at_a.load(Ordering::Relaxed), at_b.load(Ordering::Relaxed));
        assert!(at_a > 0 && at_b > 0, "a {at_a}, b {at_b}");
        // Round-robin by sequence number: the two differ by at most one.
        assert!(at_a.abs_diff(at_b) <= 1, "a {at_a}, b {at_b}");
        assert_eq!(at_a + at_b, result.ok);
    }

    #[test]
    fn templates_render_their_sequence_number_and_body_length() {
        let p = Prepared::new(&RequestTemplate {
            url: "http://127.0.0.1:8080/webhooks/google".into(),
            headers: vec![("X-Goog-Message-Number".into(), "{n}".into())],
            body: Some(r#"{"k":"{n}"}"#.into()),
        })
        .unwrap();
        assert_eq!(p.address, "127.0.0.1:8080");
        let text = String::from_utf8(p.render(42)).unwrap();
        assert_eq!(
            text,
            "POST /webhooks/google HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             X-Goog-Message-Number: 42\r\nContent-Length: 10\r\n\r\n{\"k\":\"42\"}"
        );
        assert!(Prepared::new(&RequestTemplate {
            url: "https://x/".into(),
            headers: vec![],
            body: None
        })
        .is_err());
    }
}
