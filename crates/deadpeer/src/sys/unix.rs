//! Unix: descriptors, the errno table, `TCP_INFO` (Linux, Android) and the coarse clock.
//!
//! Sources for the errnos a connection dies with: Linux `net/ipv4/tcp_timer.c`
//! (`tcp_write_err`), `net/ipv4/tcp_input.c` (`tcp_reset`), `net/ipv4/icmp.c` /
//! `net/ipv6/icmp.c` (`icmp_err_convert`, `icmpv6_err_convert`), measured in docs/kernel.md;
//! FreeBSD `sys/netinet/tcp_timer.c` and XNU `bsd/netinet/tcp_timer.c` drop a connection whose
//! keepalive or retransmission timer ran out with `ETIMEDOUT` (not measured here).

use std::io;

use super::{Code, TcpInfo};

pub(crate) use std::os::fd::AsFd as AsOsSocket;
/// A borrowed socket: a descriptor.
pub(crate) type Borrowed<'a> = std::os::fd::BorrowedFd<'a>;

/// Borrows the socket of `socket`.
pub(crate) fn borrow(socket: &impl AsOsSocket) -> Borrowed<'_> {
    socket.as_fd()
}

/// What an errno says about a connection.
pub(crate) fn code(errno: i32) -> Code {
    match errno {
        libc::ETIMEDOUT => Code::TimedOut,
        libc::ECONNRESET => Code::Reset,
        libc::EPIPE => Code::Pipe,
        libc::ENOTCONN => Code::NotConnected,
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::EOPNOTSUPP => {
            Code::Unreachable
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::ENONET => Code::Unreachable,
        libc::ECONNREFUSED | libc::ENOPROTOOPT | libc::EACCES => Code::Refused,
        _ => Code::Other,
    }
}

/// Whether `errno` says no descriptor is left.
#[cfg(feature = "metrics")]
pub(crate) fn is_out_of_descriptors(errno: i32) -> bool {
    matches!(errno, libc::EMFILE | libc::ENFILE)
}

/// Whether a failed socket option call says the socket is not TCP.
pub(crate) fn is_not_tcp(errno: i32) -> bool {
    matches!(errno, libc::ENOPROTOOPT | libc::EOPNOTSUPP)
}

/// Whether a failed socket option call says the descriptor is not a socket.
pub(crate) fn is_not_socket(errno: i32) -> bool {
    errno == libc::ENOTSOCK
}

/// `getsockopt(TCP_INFO)`: one system call, about 0.3 µs.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn tcp_info(fd: Borrowed<'_>) -> io::Result<TcpInfo> {
    use std::mem::{MaybeUninit, size_of};
    use std::os::fd::AsRawFd;

    let mut raw = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is a descriptor borrowed for the duration of the call; `raw` points to
    // `len` writable bytes; the kernel writes at most `len` bytes and stores the count in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            raw.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `tcp_info` is plain integers, so the zeroed bytes are a valid value, and the kernel
    // overwrote a prefix of them with another valid value (older kernels fill less).
    let raw = unsafe { raw.assume_init() };
    use std::time::Duration;
    let ms = |v: u32| Duration::from_millis(v.into());
    let has_snd_wnd =
        len as usize >= std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + size_of::<u32>();
    Ok(TcpInfo {
        state: raw.tcpi_state,
        probes: raw.tcpi_probes,
        backoff: raw.tcpi_backoff,
        retransmits: raw.tcpi_retransmits,
        unacked: raw.tcpi_unacked,
        last_data_recv: ms(raw.tcpi_last_data_recv),
        last_data_sent: ms(raw.tcpi_last_data_sent),
        last_ack_recv: ms(raw.tcpi_last_ack_recv),
        rtt: Duration::from_micros(raw.tcpi_rtt.into()),
        rto: Duration::from_micros(raw.tcpi_rto.into()),
        snd_wnd: has_snd_wnd.then_some(raw.tcpi_snd_wnd),
    })
}

/// `TCP_INFO` is read on Linux and Android only: the BSDs' and macOS's structures differ
/// (`struct tcp_info` in FreeBSD's `netinet/tcp.h`, `TCP_CONNECTION_INFO` on macOS) and are not
/// read by deadpeer.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn tcp_info(_fd: Borrowed<'_>) -> io::Result<TcpInfo> {
    Err(super::unsupported(
        "TCP_INFO (deadpeer reads Linux's and Android's struct tcp_info only)",
    ))
}

/// A monotonic timestamp from the kernel's coarse clock (`CLOCK_MONOTONIC_COARSE` on Linux and
/// Android: the time of the last timer tick, 1–10 ms resolution, read without a hardware clock
/// access; `CLOCK_MONOTONIC` elsewhere).
#[allow(unsafe_code)]
#[cfg(feature = "tokio")]
pub(crate) fn coarse_now() -> std::time::Duration {
    use std::time::Duration;

    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call; the clock id is
    // a constant the platform defines. On failure (impossible for these ids) `ts` stays zero.
    let rc = unsafe { libc::clock_gettime(CLOCK, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
