//! Who held a connection that died, and in which network namespace: best effort.
//!
//! No tracepoint names the socket's inode, its process or its network namespace, and by the
//! time the death is seen the socket has left the kernel's socket tables. So watch keeps an
//! index, built before the deaths, of every TCP connection of every network namespace:
//!
//! - the namespaces: those of every process (`/proc/PID/ns/net`) and the named ones
//!   (`/run/netns/*`, `ip netns`);
//! - each namespace's connections and their socket inodes: `/proc/PID/net/tcp` and `tcp6` of a
//!   process in it, or, for a namespace no process is in, the same files read by a thread that
//!   entered it (`setns`);
//! - each inode's owner: the lowest pid whose `/proc/PID/fd` holds it, and `/proc/PID/comm`.
//!
//! The index is rebuilt in its own thread, at nice 10, whenever a connection was established, at
//! most every [`MIN_INTERVAL`], at least every [`MAX_INTERVAL`], and using at most a tenth of a
//! CPU where that allows ([`DUTY`]); a connection that dies before the next rebuild has no
//! owner, and one held by several processes, or found in several namespaces with the same
//! addresses, is reported with the first (lowest pid, first namespace).

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::event::Flow;

/// The index is rebuilt at most this often.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// After a rebuild that took `t`, the next waits `t × DUTY`, within [`MIN_INTERVAL`] and
/// [`MAX_INTERVAL`]: the thread uses at most a tenth of a CPU unless a rebuild takes longer than
/// 100 ms (a rebuild reads every namespace's TCP tables, which walks the kernel's whole
/// connection hash each time, and every process's descriptors).
const DUTY: u32 = 9;
/// While connections open, the index is rebuilt at least this often.
const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// The holder of a socket, and the network namespace the connection lives in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Owner {
    pub(crate) pid: Option<u32>,
    pub(crate) command: Option<String>,
    /// The namespace's inode (`ls -L -i /proc/PID/ns/net`, `net:[INODE]`).
    pub(crate) netns: u64,
    /// Its name under /run/netns, if it has one.
    pub(crate) netns_name: Option<String>,
}

type Index = HashMap<Flow, Owner>;

/// The index, and the thread that rebuilds it.
#[derive(Debug)]
pub(crate) struct Owners {
    index: Arc<Mutex<Arc<Index>>>,
    wake: SyncSender<()>,
    pending: Arc<AtomicBool>,
}

impl Owners {
    /// Builds the index once, then starts the thread that rebuilds it on [`Owners::stale`].
    pub(crate) fn start() -> Self {
        let index = Arc::new(Mutex::new(Arc::new(build().0)));
        let (wake, rx) = sync_channel(1);
        let pending = Arc::new(AtomicBool::new(false));
        let (i, p) = (Arc::clone(&index), Arc::clone(&pending));
        std::thread::Builder::new()
            .name("owners".into())
            .spawn(move || rebuild_loop(&rx, &i, &p))
            .expect("spawn the owners thread");
        Self {
            index,
            wake,
            pending,
        }
    }

    /// A connection was established: rebuild soon.
    pub(crate) fn stale(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // Full: a rebuild is already due. Disconnected: the rebuilder is gone. Either way,
            // nothing to do.
            let _: Result<(), TrySendError<()>> = self.wake.try_send(());
        }
    }

    pub(crate) fn get(&self, flow: &Flow) -> Option<Owner> {
        let index = Arc::clone(&self.index.lock().unwrap_or_else(PoisonError::into_inner));
        index.get(flow).cloned()
    }
}

/// Nice value of the rebuilding thread: a rebuild may wait, the deaths may not.
const NICE: i32 = 10;

fn rebuild_loop(rx: &Receiver<()>, index: &Mutex<Arc<Index>>, pending: &AtomicBool) {
    // On Linux, setpriority on a thread id sets that thread's nice value only.
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE);
    let mut retries = 0;
    loop {
        if retries == 0 && rx.recv().is_err() {
            return;
        }
        pending.store(false, Ordering::Release);
        let started = std::time::Instant::now();
        let (fresh, unaccepted) = build();
        let took = started.elapsed();
        let old = std::mem::replace(
            &mut *index.lock().unwrap_or_else(PoisonError::into_inner),
            Arc::new(fresh),
        );
        // Freed outside the lock.
        drop(old);
        // Connections still waiting to be accepted have no inode yet: look again, a few times.
        retries = if unaccepted > 0 && retries < RETRIES {
            retries + 1
        } else {
            0
        };
        std::thread::sleep((took * DUTY).clamp(MIN_INTERVAL, MAX_INTERVAL));
    }
}

/// Rebuilds after one that found connections not yet accepted (no inode, so no owner).
const RETRIES: u32 = 3;

/// One pass over /proc and /run/netns: the index, and how many established connections had no
/// inode yet (not accepted). The tables are read before the descriptors, so that a connection
/// listed with an inode is already held by its owner.
fn build() -> (Index, usize) {
    // Namespace inode → where its tables can be read.
    let mut spaces: HashMap<u64, Space> = HashMap::new();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for &pid in &pids {
        if let Ok(ns) = fs::metadata(Path::new("/proc").join(pid.to_string()).join("ns/net")) {
            spaces.entry(ns.ino()).or_insert(Space::Pid(pid));
        }
    }
    let mut names: HashMap<u64, String> = HashMap::new();
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        let (Ok(meta), Some(name)) = (fs::metadata(entry.path()), file_name.to_str()) else {
            continue;
        };
        names.insert(meta.ino(), name.to_owned());
        spaces
            .entry(meta.ino())
            .or_insert_with(|| Space::Named(entry.path().to_string_lossy().into_owned()));
    }
    let mut unaccepted = 0;
    let mut listed: Vec<(u64, Flow, u64)> = Vec::new();
    for (ns, space) in spaces {
        let (rows, waiting) = space.connections();
        unaccepted += waiting;
        listed.extend(rows.into_iter().map(|(flow, inode)| (ns, flow, inode)));
    }
    let mut owners: HashMap<u64, (u32, String)> = HashMap::new();
    for pid in pids {
        let dir = Path::new("/proc").join(pid.to_string());
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut command = None;
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            owners.entry(inode).or_insert_with(|| {
                let c = command.get_or_insert_with(|| {
                    fs::read_to_string(dir.join("comm"))
                        .map(|s| s.trim_end().to_owned())
                        .unwrap_or_default()
                });
                (pid, c.clone())
            });
        }
    }
    let mut index = Index::new();
    for (ns, flow, inode) in listed {
        let (pid, command) = owners.get(&inode).cloned().unzip();
        index.entry(flow).or_insert_with(|| Owner {
            pid,
            command,
            netns: ns,
            netns_name: names.get(&ns).cloned(),
        });
    }
    (index, unaccepted)
}

/// Where a namespace's TCP tables can be read.
enum Space {
    /// `/proc/PID/net/`.
    Pid(u32),
    /// A bind mount under /run/netns that no process is in: entered by a short-lived thread.
    Named(String),
}

impl Space {
    fn connections(&self) -> (Vec<(Flow, u64)>, usize) {
        match self {
            Space::Pid(pid) => tables(&Path::new("/proc").join(pid.to_string()).join("net")),
            Space::Named(path) => {
                let path = path.clone();
                std::thread::spawn(move || {
                    let file = fs::File::open(&path).ok()?;
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&file),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .ok()?;
                    Some(tables(Path::new("/proc/thread-self/net")))
                })
                .join()
                .ok()
                .flatten()
                .unwrap_or_default()
            }
        }
    }
}

/// The connections of `tcp` and `tcp6` in a `net` directory, with their inodes, and how many
/// established ones have none yet (waiting to be accepted).
fn tables(net: &Path) -> (Vec<(Flow, u64)>, usize) {
    let mut out = Vec::new();
    let mut waiting = 0;
    for file in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(net.join(file)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            match parse_row(line) {
                Some(row) => out.push(row),
                None => waiting += usize::from(unaccepted(line)),
            }
        }
    }
    (out, waiting)
}

/// An established connection without an inode: not accepted yet.
fn unaccepted(line: &str) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    f.get(3) == Some(&"01") && f.get(9) == Some(&"0")
}

/// `  0: 0100007F:1F90 0100007F:D88C 01 … 0 12345 …` → ((local, peer), inode). Listening
/// sockets (peer port 0) are skipped.
fn parse_row(line: &str) -> Option<(Flow, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = hex_addr(f.get(1)?)?;
    let peer = hex_addr(f.get(2)?)?;
    let inode: u64 = f.get(9)?.parse().ok()?;
    (peer.port() != 0 && inode != 0).then_some(((local, peer), inode))
}

/// The kernel prints each 32-bit word of the address in host byte order.
fn hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip: IpAddr = match ip.len() {
        8 => Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(b).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn rows() {
        let v4 = "   1: 0100007F:1F90 0200007F:D88C 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1";
        let ((l, p), inode) = parse_row(v4).unwrap();
        assert_eq!(l, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(p, "127.0.0.2:55436".parse().unwrap());
        assert_eq!(inode, 4242);
        let listen = v4.replace("0200007F:D88C", "00000000:0000");
        assert_eq!(parse_row(&listen), None);
        let v6 = "   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:D88C 01 0:0 00:0 0 0 0 7 1";
        let ((l, p), _) = parse_row(v6).unwrap();
        assert_eq!(l, "[::1]:8080".parse().unwrap());
        assert_eq!(p, "[::ffff:127.0.0.1]:55436".parse().unwrap());
        assert_eq!(parse_row("garbage"), None);
        let waiting = v4.replace(" 4242 ", " 0 ");
        assert_eq!(parse_row(&waiting), None);
        assert!(unaccepted(&waiting));
        assert!(!unaccepted(v4));
        assert!(!unaccepted(
            &listen.replace(" 4242 ", " 0 ").replace(" 01 ", " 0A ")
        ));
        assert_eq!(hex_addr("0100007F"), None);
        assert_eq!(socket_inode(b"pipe:[1]"), None);
    }

    #[test]
    fn finds_this_process_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let flow = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let owner = build()
            .0
            .remove(&flow)
            .expect("the index has our connection");
        assert_eq!(owner.pid, Some(std::process::id()));
        let ns = fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(owner.netns, ns);
        assert!(client.as_raw_fd() > 0);
    }
}
