//! Raising the open-file limit: every connection is a file descriptor, and
//! shells often start processes with a soft limit of 1,024 under a much
//! higher hard one. Shared by the server binary and the load harness (which
//! links the library without the `server` feature), so both lift the limit
//! the same way.

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; the soft limit in
/// force afterwards, or `None` if it could not be read.
#[allow(unsafe_code)]
pub fn raise_nofile() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r = raised;
            }
        }
    }
    Some(r.rlim_cur)
}
