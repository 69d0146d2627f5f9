//! Windows: sockets, the Windows Sockets error table and the clock.
//!
//! Error codes are those of Microsoft's "Windows Sockets Error Codes" page
//! (<https://learn.microsoft.com/en-us/windows/win32/winsock/windows-sockets-error-codes-2>);
//! what each means for a connection is quoted from it on [`code`]. Not measured by this project.

use std::io;

use super::{Code, TcpInfo};

pub(crate) use std::os::windows::io::AsSocket as AsOsSocket;
/// A borrowed socket.
pub(crate) type Borrowed<'a> = std::os::windows::io::BorrowedSocket<'a>;

/// Borrows the socket of `socket`.
pub(crate) fn borrow(socket: &impl AsOsSocket) -> Borrowed<'_> {
    socket.as_socket()
}

const WSAENOTSOCK: i32 = 10038;
const WSAENOPROTOOPT: i32 = 10042;
const WSAEOPNOTSUPP: i32 = 10045;
const WSAENETDOWN: i32 = 10050;
const WSAENETUNREACH: i32 = 10051;
const WSAENETRESET: i32 = 10052;
const WSAECONNABORTED: i32 = 10053;
const WSAECONNRESET: i32 = 10054;
const WSAENOTCONN: i32 = 10057;
const WSAESHUTDOWN: i32 = 10058;
const WSAETIMEDOUT: i32 = 10060;
const WSAECONNREFUSED: i32 = 10061;
const WSAEHOSTDOWN: i32 = 10064;
const WSAEHOSTUNREACH: i32 = 10065;

/// What a Windows Sockets error says about a connection:
///
/// | code | Microsoft's words | here |
/// |---|---|---|
/// | `WSAENETRESET` (10052) | "the connection has been broken due to keep-alive activity detecting a failure while the operation was in progress" | keepalive timeout |
/// | `WSAETIMEDOUT` (10060) | "the established connection failed because connected host has failed to respond" | timed out |
/// | `WSAECONNRESET` (10054) | "an existing connection was forcibly closed by the remote host" | reset |
/// | `WSAECONNABORTED` (10053) | "aborted by the software in your host computer, possibly due to a data transmission time-out or protocol error" | aborted |
/// | `WSAEHOSTUNREACH`, `WSAENETUNREACH`, `WSAEHOSTDOWN`, `WSAENETDOWN` | unreachable host or network | unreachable |
/// | `WSAECONNREFUSED` (10061) | "the target computer actively refused it" | refused |
/// | `WSAENOTCONN`, `WSAESHUTDOWN` | not connected, or shut down | the aftermath of a close |
pub(crate) fn code(errno: i32) -> Code {
    match errno {
        WSAETIMEDOUT => Code::TimedOut,
        WSAENETRESET => Code::KeepaliveFailed,
        WSAECONNRESET => Code::Reset,
        WSAECONNABORTED => Code::Aborted,
        WSAENOTCONN | WSAESHUTDOWN => Code::NotConnected,
        WSAEHOSTUNREACH | WSAENETUNREACH | WSAEHOSTDOWN | WSAENETDOWN => Code::Unreachable,
        WSAECONNREFUSED => Code::Refused,
        _ => Code::Other,
    }
}

/// Whether `errno` says no socket handle is left (`WSAEMFILE`, 10024).
#[cfg(feature = "metrics")]
pub(crate) fn is_out_of_descriptors(errno: i32) -> bool {
    errno == 10024
}

/// Whether a failed socket option call says the socket is not TCP.
pub(crate) fn is_not_tcp(errno: i32) -> bool {
    matches!(errno, WSAENOPROTOOPT | WSAEOPNOTSUPP)
}

/// Whether a failed socket option call says the handle is not a socket.
pub(crate) fn is_not_socket(errno: i32) -> bool {
    errno == WSAENOTSOCK
}

/// Windows has `SIO_TCP_INFO`, which deadpeer does not read.
pub(crate) fn tcp_info(_socket: Borrowed<'_>) -> io::Result<TcpInfo> {
    Err(super::unsupported(
        "TCP_INFO (Windows has SIO_TCP_INFO, which deadpeer does not read)",
    ))
}

/// A monotonic timestamp: time since the first call in this process.
#[cfg(feature = "tokio")]
pub(crate) fn coarse_now() -> std::time::Duration {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    static START: OnceLock<Instant> = OnceLock::new();
    // Never zero, as the Unix clocks are not, so a zero timestamp can mean "unknown".
    START.get_or_init(Instant::now).elapsed() + Duration::from_millis(1)
}
