//! Refusing io_uring to this process, as Docker's default seccomp profile does: what tests of the epoll
//! fallback need (the engine's own, and the node's).

use std::io;
use std::process::{Command, Output};

/// Re-runs this test binary with only the test `name`, single-threaded (so the filter the child installs
/// covers every thread it starts), with the environment variable `env` set to `1` (the child's cue to run)
/// and its output captured.
pub fn rerun_test_in_child(name: &str, env: &str) -> io::Result<Output> {
    Command::new(std::env::current_exe()?)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
}

/// Installs a seccomp filter on the calling thread (inherited by the threads it starts afterwards) that
/// answers `io_uring_setup` with `EPERM` and allows every other system call. It cannot be undone: call it
/// in a process (or thread) that exists for the test.
pub fn deny_io_uring_setup() -> io::Result<()> {
    let nr = libc::SYS_io_uring_setup as u32;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only; it is required before an unprivileged filter.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `prog` points at `filter`, a valid classic BPF program that lives for the call; the kernel copies
    // it. The filter only ever returns ALLOW or ERRNO(EPERM).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
