//! Runs inside a `recorder run` workload and reports, one `probe KEY VALUE` line each, how it
//! is contained, without changing anything: capabilities, no_new_privs and seccomp mode from
//! `/proc/self/status`; its namespaces; whether `/proc/sys` and `/sys` are writable (asked
//! with access(2) and statvfs(2), never by writing); whether a TCP port on 127.0.0.1 answers
//! (the host's, given as the first argument) and whether its own loopback works; and what
//! namespace creation and io_uring return. With `sleep` as the first argument it prints
//! `probe ready` and sleeps instead.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

fn say(key: &str, value: impl std::fmt::Display) {
    println!("probe {key} {value}");
}

fn errno_of(ret: i64) -> String {
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        format!("err{}", e.raw_os_error().unwrap_or(0))
    } else {
        "ok".into()
    }
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "sleep" {
        say("ready", 1);
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(1000));
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    for key in ["CapEff", "CapBnd", "NoNewPrivs", "Seccomp"] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or("?")
            .trim();
        say(key, value);
    }
    for ns in ["mnt", "pid", "uts", "ipc", "net"] {
        let link = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        say(&format!("ns-{ns}"), link.display());
    }
    for (key, path) in [
        ("proc-sys", c"/proc/sys/kernel/core_pattern"),
        ("sysrq", c"/proc/sysrq-trigger"),
        ("sys", c"/sys/kernel"),
    ] {
        // SAFETY: access(2) on a NUL-terminated literal; it only checks.
        let ret = unsafe { libc::access(path.as_ptr(), libc::W_OK) };
        say(&format!("{key}-writable"), errno_of(ret.into()));
    }
    for (key, path) in [("proc-sys", c"/proc/sys"), ("sys", c"/sys")] {
        // SAFETY: statvfs into a zeroed struct of the right type.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let ret = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        let ro = ret == 0 && st.f_flag & libc::ST_RDONLY != 0;
        say(&format!("{key}-readonly"), ro);
    }
    // The root's mount options (field 6 of its mountinfo line): no nosuid, so setuid binaries
    // of the image behave as in production.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_options = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[4] == "/")
        .map(|f| f[5].to_owned())
        .unwrap_or_default();
    say(
        "root-nosuid",
        root_options.split(',').any(|o| o == "nosuid"),
    );
    if let Ok(port) = arg.parse::<u16>() {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let host = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("err{}", e.raw_os_error().unwrap_or(0)),
        };
        say("host-port", host);
    }
    let own = TcpListener::bind("127.0.0.1:0").and_then(|l| {
        let addr = l.local_addr()?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop)
    });
    say("loopback", if own.is_ok() { "ok" } else { "err" });
    // SAFETY: plain syscalls with constant arguments; on success the namespace is ours alone
    // (this process exits right after) and the io_uring fd is leaked to exit.
    unsafe {
        say(
            "unshare-user",
            errno_of(libc::unshare(libc::CLONE_NEWUSER).into()),
        );
        let mut params = [0u8; 120];
        say(
            "io-uring",
            errno_of(libc::syscall(
                libc::SYS_io_uring_setup,
                1,
                params.as_mut_ptr(),
            )),
        );
    }
    say("end", 1);
}
