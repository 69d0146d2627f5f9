//! Which process owns a socket: `/proc/<pid>/fd/*` links read `socket:[INODE]`, and
//! `/proc/<pid>/comm` names the process. Processes whose descriptors this user may not read
//! (other users', without root) are counted, not guessed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

/// The owner of a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) pid: u32,
    /// `/proc/<pid>/comm`: the command name, at most 15 bytes.
    pub(crate) command: String,
}

/// A socket descriptor whose inode the kernel's socket tables do not list: a candidate zombie
/// (or a socket of another protocol, or one never connected; [`super::zombie`] tells).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unlisted {
    pub(crate) owner: Owner,
    /// The descriptor number in the owner.
    pub(crate) fd: i32,
    pub(crate) inode: u32,
}

/// Socket inodes mapped to their owners, and what could not be seen.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    by_inode: HashMap<u32, Owner>,
    /// Socket descriptors whose inode is not in `listed` (only when a `listed` set was given).
    pub(crate) unlisted: Vec<Unlisted>,
    /// User processes whose descriptors could not be read (permission denied).
    pub(crate) hidden: usize,
}

impl Owners {
    /// The owner of `inode`, when a visible process holds it. A socket shared by several
    /// processes (after `fork`) is reported with the lowest pid.
    pub(crate) fn get(&self, inode: u32) -> Option<&Owner> {
        self.by_inode.get(&inode)
    }
}

/// Scans `/proc` for the processes holding the sockets in `wanted` (inodes; 0 is never wanted).
/// With `listed` (every inode the socket tables hold), also collects the socket descriptors
/// whose inode is not in it.
pub(crate) fn scan(wanted: &HashSet<u32>, listed: Option<&HashSet<u32>>) -> Owners {
    scan_in(Path::new("/proc"), wanted, listed)
}

fn scan_in(proc: &Path, wanted: &HashSet<u32>, listed: Option<&HashSet<u32>>) -> Owners {
    let mut owners = Owners::default();
    if wanted.is_empty() && listed.is_none() {
        return owners;
    }
    // Unlisted sockets count only in processes of this network namespace: the socket tables
    // are this namespace's, and other namespaces' sockets are missing from them by design.
    let own_netns = netns(&proc.join("self"));
    let Ok(entries) = fs::read_dir(proc) else {
        return owners;
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = proc.join(pid.to_string());
        let fds = match fs::read_dir(dir.join("fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if !is_kernel_thread(&dir) {
                    owners.hidden += 1;
                }
                continue;
            }
            // The process exited meanwhile.
            Err(_) => continue,
        };
        let mut command: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            if listed.is_some_and(|l| !l.contains(&inode)) {
                if own_netns.is_none() || netns(&dir) != own_netns {
                    continue;
                }
                let fd = fd.file_name().to_str().and_then(|n| n.parse().ok());
                if let Some(fd) = fd {
                    let command = command.get_or_insert_with(|| comm(&dir));
                    owners.unlisted.push(Unlisted {
                        owner: Owner {
                            pid,
                            command: command.clone(),
                        },
                        fd,
                        inode,
                    });
                }
                continue;
            }
            if !wanted.contains(&inode) || owners.by_inode.contains_key(&inode) {
                continue;
            }
            let command = command.get_or_insert_with(|| comm(&dir));
            owners.by_inode.insert(
                inode,
                Owner {
                    pid,
                    command: command.clone(),
                },
            );
        }
    }
    owners
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &[u8]) -> Option<u32> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The network namespace of a process: the device and inode of `/proc/<pid>/ns/net`.
fn netns(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(dir.join("ns/net"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn comm(dir: &Path) -> String {
    fs::read_to_string(dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

/// Kernel threads hold no sockets; their descriptor tables are root's, so they are not counted
/// as hidden. `/proc/<pid>/stat` (world-readable) flags them with `PF_KTHREAD`.
fn is_kernel_thread(dir: &Path) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
        return false;
    };
    // Fields after the command, which is in parentheses and may hold spaces: the flags are the
    // 9th field overall, the 7th after ")".
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[99999999999]"), None);
    }

    #[test]
    fn finds_this_process_socket() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // The socket's inode, as fstat on the descriptor's link gives it.
        let fd_path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&listener)
        );
        let inode = fs::metadata(&fd_path).unwrap().ino() as u32;
        let wanted = HashSet::from([inode]);
        let owners = scan(&wanted, None);
        let owner = owners.get(inode).expect("this process holds the socket");
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(owner.command, comm(Path::new("/proc/self")));
        assert!(!is_kernel_thread(Path::new("/proc/self")));
    }
}
