//! Named network namespaces and a scoped guard that moves the calling thread into one.

use std::fmt;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{LabError, cmd};

/// Where `ip netns add` bind-mounts named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// The longest file name, hence namespace name, Linux accepts (`NAME_MAX`), in bytes.
pub(crate) const NAME_MAX: usize = 255;

/// Checks `name` as iproute2 does (`invalid_name` in `ip/ipnetns.c`), plus a NUL, which no path
/// can hold.
fn validate_name(name: &str) -> Result<(), LabError> {
    let reason = if name.is_empty() {
        "it is empty; pass the name `ip netns list` shows".to_owned()
    } else if name.len() > NAME_MAX {
        format!(
            "it is {} bytes long, the limit is {NAME_MAX} (NAME_MAX); pass the name `ip netns \
             list` shows",
            name.len()
        )
    } else if name == "." || name == ".." {
        "`.` and `..` are not namespaces; pass the name `ip netns list` shows".to_owned()
    } else if let Some(c) = name.chars().find(|c| matches!(c, '/' | '\0')) {
        format!(
            "{c:?} is not allowed in a namespace name (it is a file name in {NETNS_DIR}); pass \
             the name `ip netns list` shows, not a path"
        )
    } else {
        return Ok(());
    };
    Err(LabError::InvalidName {
        what: "namespace name",
        value: name.to_owned(),
        reason,
    })
}

/// How long [`Netns::tcp_connect`] waits for the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A named network namespace: one of a [`Lab`](crate::Lab)'s, or an existing one opened with
/// [`Netns::open`]. It holds the name and an open handle.
///
/// The handle (an fd on `/run/netns/<name>`) is what [`Netns::enter`] passes to `setns(2)`.
/// Sockets are bound to the namespace they were *created* in, for their whole life, so the
/// helpers here create a socket inside the namespace and hand it back to you: you can then use it
/// from any thread, with std, socket2 or tokio, and it keeps talking through the namespace.
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Opens an existing named namespace, one that `ip netns add NAME` created (it is the bind
    /// mount `/run/netns/NAME`).
    ///
    /// The namespace is **not owned**: dropping the `Netns` only closes its handle, and the
    /// testkit never deletes it (not on drop, not in the stale sweep, which only deletes
    /// namespaces of its own naming scheme whose creating process is gone). Everything else
    /// works as for a lab's namespaces: [`enter`](Self::enter), [`run`](Self::run), the socket
    /// helpers and [`ip`](Self::ip).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // e.g. after `ip netns add blue` and some setup of your own
    /// let blue = deadpeer_testkit::Netns::open("blue")?;
    /// let listener = blue.tcp_listener("127.0.0.1:7000".parse()?)?;
    /// # drop(listener);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`LabError::InvalidName`] for a name `ip netns` would refuse: empty, longer than 255
    ///   bytes (`NAME_MAX`), `.` or `..`, or holding a `/` or a NUL;
    /// - [`LabError::Io`] when `/run/netns/NAME` cannot be opened, e.g. it does not exist (the
    ///   message says to check `ip netns list`) or the process is not root.
    pub fn open(name: &str) -> Result<Self, LabError> {
        validate_name(name)?;
        let path = PathBuf::from(NETNS_DIR).join(name);
        let file = File::open(&path).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::NotFound {
                format!(
                    " (no namespace {name:?}: `ip netns list` shows the existing ones, \
                     `ip netns add {name}` creates it)"
                )
            } else {
                String::new()
            };
            LabError::io(format!("opening {}{hint}", path.display()), e)
        })?;
        Ok(Netns {
            name: name.to_owned(),
            file,
        })
    }

    /// The namespace's name, as `ip netns list` shows it (e.g. `dpk-4242-0-s`).
    ///
    /// Use it with `ip -n NAME ...` or `ip netns exec NAME ...`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Moves the **calling thread** into this namespace until the returned guard is dropped.
    ///
    /// It calls `setns(2)` with `CLONE_NEWNET`, which changes the network namespace of this one
    /// thread only. The guard remembers the thread's previous namespace and switches back when it
    /// is dropped, including during panic unwinding. The guard is `!Send`, so it cannot be dropped
    /// on another thread. Guards may nest; drop them in reverse order (scopes do that for you).
    ///
    /// Every socket created while the guard lives belongs to this namespace, and keeps
    /// belonging to it after the guard is gone.
    ///
    /// Do not hold the guard across an `.await`: the task could move to another worker thread,
    /// and the worker it leaves would stay in the namespace. In async code, create the socket in
    /// [`Netns::run`] (or use [`Netns::tokio_connect`], [`Netns::tokio_listener`] and
    /// [`Netns::tokio_socket`]) and do the asynchronous work outside.
    ///
    /// # Errors
    ///
    /// Fails if the current namespace cannot be opened or `setns(2)` fails (it needs
    /// `CAP_SYS_ADMIN`).
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lab = deadpeer_testkit::Lab::new()?;
    /// let listener = {
    ///     let _inside = lab.server().enter()?;
    ///     std::net::TcpListener::bind((lab.server_addr(), 7000))?
    /// }; // back in the original namespace here; the listener stays in the server namespace
    /// # drop(listener);
    /// # Ok(()) }
    /// ```
    pub fn enter(&self) -> io::Result<NetnsGuard<'_>> {
        let original = File::open("/proc/thread-self/ns/net")?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(NetnsGuard {
            original,
            netns: self,
            _not_send: PhantomData,
        })
    }

    /// Runs `f` on the calling thread inside this namespace, then switches back.
    ///
    /// The switch back also happens if `f` panics. This is the safe way to create sockets from
    /// async code: `f` is synchronous, so the worker thread is restored before `run` returns.
    ///
    /// # Errors
    ///
    /// Fails if entering fails; see [`Netns::enter`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lab = deadpeer_testkit::Lab::new()?;
    /// // /proc/thread-self/net, not /proc/net: that one shows the main thread's namespace.
    /// let routes = lab.client().run(|| std::fs::read_to_string("/proc/thread-self/net/route"))??;
    /// assert!(routes.contains("00000000")); // the client's default route via the router
    /// # Ok(()) }
    /// ```
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> io::Result<R> {
        let _guard = self.enter()?;
        Ok(f())
    }

    /// Creates a socket2 [`Socket`] inside this namespace.
    ///
    /// The protocol is left to the kernel's default for `ty` (TCP for `STREAM`). Configure it
    /// (keepalive, `TCP_USER_TIMEOUT`, non-blocking, ...) and bind, listen or connect it from
    /// anywhere.
    ///
    /// # Errors
    ///
    /// Fails if entering the namespace or `socket(2)` fails.
    pub fn socket(&self, domain: Domain, ty: Type) -> io::Result<Socket> {
        self.run(|| Socket::new(domain, ty, None))?
    }

    /// Binds a blocking std [`TcpListener`](std::net::TcpListener) to `addr` inside this
    /// namespace.
    ///
    /// # Errors
    ///
    /// Fails if entering the namespace or binding fails.
    pub fn tcp_listener(&self, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        self.run(|| std::net::TcpListener::bind(addr))?
    }

    /// Connects a blocking std [`TcpStream`](std::net::TcpStream) to `addr` from inside this
    /// namespace, waiting at most [`CONNECT_TIMEOUT`] for the handshake.
    ///
    /// The calling thread stays in the namespace during the handshake. To set socket options
    /// before the SYN, use [`Netns::socket`] instead.
    ///
    /// # Errors
    ///
    /// Fails if entering the namespace or connecting fails or times out.
    pub fn tcp_connect(&self, addr: SocketAddr) -> io::Result<std::net::TcpStream> {
        self.run(|| std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))?
    }

    /// Binds a tokio [`TcpListener`](tokio::net::TcpListener) to `addr` inside this namespace.
    ///
    /// The listening socket is created and bound inside the namespace, then registered with
    /// tokio from the original one.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime (as
    /// [`tokio::net::TcpListener::from_std`] does).
    ///
    /// # Errors
    ///
    /// Fails if entering the namespace, binding or registering fails.
    pub fn tokio_listener(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let std_listener = self.tcp_listener(addr)?;
        std_listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std_listener)
    }

    /// Creates an unconnected, non-blocking tokio [`TcpSocket`](tokio::net::TcpSocket) inside
    /// this namespace, of the address family of `addr`.
    ///
    /// Set options on it (or on a `socket2::SockRef` of it) before calling
    /// [`connect`](tokio::net::TcpSocket::connect), which may run on any thread.
    ///
    /// # Errors
    ///
    /// Fails if entering the namespace or creating the socket fails.
    pub fn tokio_socket(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
        let socket = self
            .run(|| Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)))??;
        socket.set_nonblocking(true)?;
        Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
    }

    /// Connects a tokio [`TcpStream`](tokio::net::TcpStream) to `addr` from inside this
    /// namespace.
    ///
    /// Only the socket's creation happens inside the namespace (synchronously); the handshake is
    /// awaited normally, so this is safe on a multi-thread runtime. The future is `Send`.
    ///
    /// # Errors
    ///
    /// Fails if entering the namespace, creating the socket or connecting fails.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let lab = deadpeer_testkit::Lab::new()?;
    /// let addr = std::net::SocketAddr::new(lab.server_addr(), 7000);
    /// let listener = lab.server().tokio_listener(addr)?;
    /// let client = lab.client().tokio_connect(addr).await?;
    /// let (server_side, _) = listener.accept().await?;
    /// # drop((client, server_side));
    /// # Ok(()) }
    /// ```
    pub async fn tokio_connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        self.tokio_socket(addr)?.connect(addr).await
    }

    /// Runs `ip -n <this namespace> ARGS...` and returns its stdout.
    ///
    /// An escape hatch for faults the lab does not model, e.g.
    /// `lab.server().ip(&["link", "set", "s0", "down"])`.
    ///
    /// # Errors
    ///
    /// Returns [`LabError::Command`] with the command line and stderr if `ip` fails.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::ip(&full)
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

/// Keeps the calling thread inside a [`Netns`]; switches it back to its previous namespace on
/// drop (also while unwinding from a panic).
///
/// Returned by [`Netns::enter`]. It is `!Send`: the thread that entered is the one that must
/// leave.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<deadpeer_testkit::NetnsGuard<'static>>();
/// ```
#[must_use = "the thread leaves the namespace as soon as the guard is dropped"]
pub struct NetnsGuard<'a> {
    original: File,
    netns: &'a Netns,
    _not_send: PhantomData<*const ()>,
}

impl Drop for NetnsGuard<'_> {
    fn drop(&mut self) {
        if let Err(err) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A thread silently left in a lab namespace would poison whatever runs on it next.
            let msg = format!(
                "deadpeer-testkit: cannot switch this thread back out of netns {}: {err}",
                self.netns.name
            );
            if std::thread::panicking() {
                eprintln!("{msg}; aborting");
                std::process::abort();
            }
            panic!("{msg}");
        }
    }
}

impl fmt::Debug for NetnsGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetnsGuard")
            .field("netns", &self.netns.name)
            .finish()
    }
}
