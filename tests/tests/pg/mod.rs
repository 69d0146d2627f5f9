//! A throwaway PostgreSQL cluster in a lab's server namespace, for the pool tests.
//!
//! `initdb` into a fresh directory owned by the `postgres` user, then `postgres` run as that
//! user (`runuser -u postgres --`) inside the server namespace (`ip netns exec`), listening on
//! the server's lab address only, with trust authentication for the lab's client addresses.
//! Dropping the [`Cluster`] (also while a panic unwinds) shuts the server down (`SIGQUIT`,
//! immediate shutdown), waits for it, and deletes the directory. Directories left behind by a
//! killed test run (whose process is gone) are swept, with their server, when the next cluster
//! starts. See `docs/testing.md`.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpeer_testkit::{Family, Lab, REQUIRE_NETNS_ENV};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The port the cluster listens on (each lab is its own network, so every test may use it).
pub const PORT: u16 = 5432;

/// The prefix of the clusters' directories under the temporary directory.
const DIR_PREFIX: &str = "deadpeer-pg-";

/// How long the server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server in a lab's server namespace.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    server: Option<Child>,
    addr: SocketAddr,
}

impl Cluster {
    /// Starts a cluster in `lab`'s server namespace, or skips the test with one line naming
    /// the package to install when the PostgreSQL server binaries are missing (a failure under
    /// `DEADPEER_REQUIRE_NETNS=1`, as for the lab itself).
    ///
    /// # Panics
    ///
    /// When a step fails on a machine that has the binaries: a bug, not a skip.
    pub fn start_or_skip(lab: &Lab, test: &str) -> Option<Cluster> {
        let bindir = match bindir() {
            Some(dir) => dir,
            None => {
                let reason = "the PostgreSQL server binaries (initdb, postgres) are not \
                              installed: `apt-get install postgresql`";
                if std::env::var(REQUIRE_NETNS_ENV).is_ok_and(|v| v == "1") {
                    panic!("{test}: {reason} ({REQUIRE_NETNS_ENV}=1 forbids skipping)");
                }
                let line = format!("skipped {test}: {reason}\n");
                let _ = std::io::stderr().write_all(line.as_bytes());
                return None;
            }
        };
        sweep_stale();
        let (uid, gid) = (id("-u"), id("-g"));
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let addr = SocketAddr::new(lab.server_addr(), PORT);
        // From here on, the directory is removed on drop whatever happens.
        let mut cluster = Cluster {
            dir,
            server: None,
            addr,
        };
        std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid)).unwrap();
        let data = cluster.data();
        run_checked(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bindir.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "--auth=trust",
                    "--username=postgres",
                    "--no-sync",
                    "--no-instructions",
                    "--encoding=UTF8",
                    "--locale=C",
                ]),
        );
        let mut hba = fs::OpenOptions::new()
            .append(true)
            .open(data.join("pg_hba.conf"))
            .unwrap();
        for family in Family::ALL {
            let client = lab.client_addr_for(family);
            let bits = if client.is_ipv4() { 32 } else { 128 };
            writeln!(hba, "host all all {client}/{bits} trust").unwrap();
        }
        drop(hba);
        let log = fs::File::create(cluster.dir.join("server.log")).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", lab.server().name()])
            .args(["runuser", "-u", "postgres", "--"])
            .arg(bindir.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&cluster.dir)
            .args(["-p", &PORT.to_string()])
            .arg("-c")
            .arg(format!("listen_addresses={}", lab.server_addr()))
            // A throwaway cluster: no durability, nothing waits on the disk.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        cluster.server = Some(server);
        cluster.wait_ready();
        Some(cluster)
    }

    /// The server's address in the lab.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A configuration for the server, as the `postgres` user (trust authentication).
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user("postgres")
            .dbname("postgres");
        config
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Waits until `postmaster.pid` says `ready` (its eighth line, `PM_STATUS_READY`).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.server.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "postgres exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            let pid_file =
                fs::read_to_string(self.data().join("postmaster.pid")).unwrap_or_default();
            if pid_file.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "postgres not ready after {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    /// Immediate shutdown, then the directory goes. Never panics.
    fn drop(&mut self) {
        let postmaster = signal(&self.data(), Signal::SIGQUIT);
        if let Some(mut server) = self.server.take() {
            // `server` is `ip netns exec`, exec'd into `runuser`, which waits for the postmaster.
            let start = Instant::now();
            while server.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    if let Some(pid) = postmaster {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    let _ = server.kill();
                    let _ = server.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to the postmaster of the data directory `data` (its pid is the first line of
/// `postmaster.pid`); `SIGQUIT` is PostgreSQL's immediate shutdown.
fn signal(data: &Path, sig: Signal) -> Option<Pid> {
    let pid = fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse::<i32>()
        .ok()?;
    // Not a recycled pid of another program (a stale directory's server may be long gone).
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() != "postgres" {
        return None;
    }
    let pid = Pid::from_raw(pid);
    kill(pid, sig).ok().map(|()| pid)
}

/// Removes the clusters of test processes that no longer exist (killed runs), with their server.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            if let Some(postmaster) = signal(&entry.path().join("data"), Signal::SIGQUIT) {
                let start = Instant::now();
                while Path::new(&format!("/proc/{postmaster}")).exists()
                    && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The directory of `initdb` and `postgres`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout).
fn bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// `id FLAG postgres`: the `postgres` user's uid or gid.
fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no `postgres` user (`apt-get install postgresql` creates it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn run_checked(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
