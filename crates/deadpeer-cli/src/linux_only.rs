//! The commands that run on Linux only (`kernel`, `check`, `demo`, `audit`, `watch`), as they stand on other systems: each takes whatever
//! arguments it is given and says, in one line, why it cannot run here (exit status 1).

use crate::error::CliError;

/// Arguments of a command this system cannot run, taken as they come.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _rest: Vec<String>,
}

fn refuse(command: &str, needs: &str) -> Result<(), CliError> {
    Err(CliError::runtime(format!(
        "`deadpeer {command}` runs on Linux only: it {needs}; this is {}. `deadpeer plan` works here",
        std::env::consts::OS
    )))
}

macro_rules! linux_only {
    ($($command:ident: $needs:literal;)*) => {$(
        pub(crate) mod $command {
            pub(crate) use super::Args;

            pub(crate) fn run(
                _: Args,
                _: &mut crate::output::Out,
            ) -> Result<(), crate::error::CliError> {
                super::refuse(stringify!($command), $needs)
            }
        }
    )*};
}

linux_only! {
    kernel: "reads and writes the keepalive sysctls under /proc/sys/net/ipv4";
    check: "reads TCP_INFO and TCP_USER_TIMEOUT from the socket";
    demo: "builds its lab from Linux network namespaces";
    audit: "reads the kernel's socket table through sock_diag netlink";
    watch: "reads Linux's TCP tracepoints through tracefs";
}
