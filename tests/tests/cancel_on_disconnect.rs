//! The `cancel_on_disconnect` example (examples/examples/cancel_on_disconnect.rs), run as users
//! run it, with a real curl killed in the middle of a request, over HTTP/1.1 and HTTP/2 (prior
//! knowledge), for `/work` (a long job) and `/events` (a quiet SSE stream): the example prints
//! `cancelled after N ms: ENDING` at once, ENDING being what the kernel did with curl's socket
//! (with nothing unread, a FIN: `closed`; with unread data, an RST: `aborted`), and `finished`
//! for a client that waits. Loopback only; each test runs its own example process.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deadpeer_testkit::{Tool, WAKE, tool_or_skip};

const EXAMPLE: &str = env!("CARGO_BIN_EXE_cancel_on_disconnect");

/// How long a line may take to come when it is due at once.
const SOON: Duration = Duration::from_secs(5);

/// A child process, killed and reaped on drop (also on panic): nothing is left behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example, running, with its stdout read line by line.
struct Example {
    _child: Reaped,
    lines: mpsc::Receiver<(String, Instant)>,
    addr: String,
}

impl Example {
    fn start() -> Self {
        let mut child = Command::new(EXAMPLE)
            .env("DEADPEER_EXAMPLE_ADDR", "127.0.0.1:0")
            // Ends by itself well after the test, should the test be killed.
            .env("DEADPEER_EXAMPLE_SECS", "60")
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the example");
        let lines = read_lines(child.stdout.take().unwrap());
        let mut example = Example {
            _child: Reaped(child),
            lines,
            addr: String::new(),
        };
        let first = example.line();
        example.addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the first line says where: {first:?}"))
            .to_owned();
        example
    }

    fn line(&self) -> String {
        self.line_at().0
    }

    fn line_at(&self) -> (String, Instant) {
        self.lines
            .recv_timeout(SOON)
            .expect("a line from the example within 5 s")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// Each line of `from`, with when it was read, on a channel (the thread ends at EOF).
fn read_lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<(String, Instant)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    rx
}

/// curl, as users run it, `-N` (no buffering); also `-v`, whose lines on stderr (unbuffered)
/// say when curl has read the response head.
fn curl(curl: &Path, url: &str, http2: bool) -> Curl {
    let mut cmd = Command::new(curl);
    cmd.args(["-s", "-N", "-v"]);
    if http2 {
        cmd.arg("--http2-prior-knowledge");
    }
    let mut child = cmd
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let stdout = read_lines(child.stdout.take().unwrap());
    let verbose = read_lines(child.stderr.take().unwrap());
    Curl {
        child: Reaped(child),
        stdout,
        verbose,
    }
}

struct Curl {
    child: Reaped,
    stdout: mpsc::Receiver<(String, Instant)>,
    verbose: mpsc::Receiver<(String, Instant)>,
}

/// The unread bytes in the receive queue of the client's side of the one connection to
/// `server_port` (`rx_queue` in /proc/net/tcp, what `ss` shows as Recv-Q).
fn client_unread(server_port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap(), 16).unwrap();
    let clients: Vec<usize> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state 01 (ESTABLISHED), tx_queue:rx_queue.
            (port(f[2]) == server_port && port(f[1]) != server_port && f[3] == "01")
                .then(|| usize::from_str_radix(f[4].split(':').nth(1).unwrap(), 16).unwrap())
        })
        .collect();
    assert_eq!(clients.len(), 1, "one client connection: {table}");
    clients[0]
}

/// `cancelled after N ms: ENDING` → (N, ENDING).
fn cancelled(line: &str) -> (u128, &str) {
    let parse = || {
        let rest = line.strip_prefix("cancelled after ")?;
        let (ms, ending) = rest.split_once(" ms: ")?;
        Some((ms.parse().ok()?, ending))
    };
    parse().unwrap_or_else(|| panic!("expected `cancelled after N ms: ENDING`, got {line:?}"))
}

/// Starts `path` with curl, kills curl (SIGKILL) once the handler runs and curl has read all
/// there is, and checks what the example says.
fn killed_mid_request(curl_path: PathBuf, path: &str, http2: bool) {
    let example = Example::start();
    let version = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
    let spawned = Instant::now();
    let mut client = curl(&curl_path, &example.url(path), http2);
    let (line, started) = example.line_at();
    assert_eq!(line, format!("started GET {path} ({version})"));
    if path == "/events" {
        // The SSE stream's head is sent at once; wait until curl has read it.
        let head = client
            .verbose
            .iter()
            .find(|(l, _)| l.starts_with("< HTTP/"));
        assert!(head.is_some(), "curl read no response head");
    }
    // Let the job run a little, as a user would before giving up.
    std::thread::sleep(Duration::from_millis(200));

    // What the kernel will do when curl dies: an RST if curl left data unread, else a FIN.
    let unread = client_unread(example.port());
    let expected = if unread > 0 { "aborted" } else { "closed" };
    let killed = Instant::now();
    client.child.0.kill().unwrap();
    // Reaped: the kernel has closed curl's socket.
    client.child.0.wait().unwrap();

    let (line, at) = example.line_at();
    let (ms, ending) = cancelled(&line);
    eprintln!(
        "{version} {path}: {line:?}, {:?} after SIGKILL ({unread} bytes unread)",
        at - killed
    );
    assert_eq!(ending, expected, "{line:?} with {unread} bytes unread");
    // On loopback the FIN or RST leaves as curl dies and arrives at once: the example's reaper
    // and handler wake, then this test's reader of its stdout.
    assert!(at - killed <= 2 * WAKE, "{:?}", at - killed);
    // N counts from the handler's start, which lies between curl's start and the line saying
    // so, to the cancel, which lies between the kill and the line saying so.
    assert!(
        (killed - started).as_millis() <= ms && ms <= (at - spawned).as_millis(),
        "N = {ms} ms: not between {:?} and {:?}",
        killed - started,
        at - spawned
    );
    // Nothing else: one line per request.
    assert!(
        example
            .lines
            .recv_timeout(Duration::from_millis(100))
            .is_err(),
        "one line per request"
    );
}

#[test]
fn curl_killed_mid_work_http1() {
    let Some(curl) = tool_or_skip!(Tool::CURL) else {
        return;
    };
    killed_mid_request(curl, "/work", false);
}

#[test]
fn curl_killed_mid_work_http2() {
    let Some(curl) = tool_or_skip!(Tool::CURL) else {
        return;
    };
    killed_mid_request(curl, "/work", true);
}

#[test]
fn curl_killed_mid_events_http1() {
    let Some(curl) = tool_or_skip!(Tool::CURL) else {
        return;
    };
    killed_mid_request(curl, "/events", false);
}

#[test]
fn curl_killed_mid_events_http2() {
    let Some(curl) = tool_or_skip!(Tool::CURL) else {
        return;
    };
    killed_mid_request(curl, "/events", true);
}

/// A client that waits gets its answer, and the example says `finished`, over both protocols.
#[test]
fn a_client_that_waits_gets_finished() {
    let Some(curl_path) = tool_or_skip!(Tool::CURL) else {
        return;
    };
    let example = Example::start();
    let mut clients = Vec::new();
    for (path, http2) in [
        ("/work", false),
        ("/work", true),
        ("/events", false),
        ("/events", true),
    ] {
        clients.push((
            path,
            curl(&curl_path, &example.url(&format!("{path}?secs=1")), http2),
        ));
    }
    let mut lines: Vec<String> = (0..8).map(|_| example.line()).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "finished",
            "finished",
            "finished",
            "finished",
            "started GET /events (HTTP/1.1)",
            "started GET /events (HTTP/2.0)",
            "started GET /work (HTTP/1.1)",
            "started GET /work (HTTP/2.0)",
        ]
    );
    for (path, mut client) in clients {
        assert!(client.child.0.wait().unwrap().success(), "curl {path}");
        let body: Vec<String> = client.stdout.iter().map(|(l, _)| l).collect();
        let last = body.iter().rev().find(|l| !l.is_empty()).unwrap();
        let expected = if path == "/work" {
            "done"
        } else {
            "data: done"
        };
        assert_eq!(last, expected, "{body:?}");
    }
}
