//! The process's own figures, read from `/proc/self` at scrape time, under
//! the names the Prometheus client libraries use (`process_*`).

/// What `/proc/self` says now (fields absent where it cannot be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident memory, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub virtual_bytes: Option<u64>,
    /// User + system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft open-file limit.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// OS threads.
    pub threads: Option<u64>,
}

/// Read them.
pub fn read() -> ProcessStats {
    let mut p = ProcessStats::default();
    let ticks = clk_tck();
    let page = page_size();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The command name (field 2) may hold spaces: split after its `)`.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // `rest` starts at field 3 (state): field n is f[n - 3].
            let num = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
            if let (Some(u), Some(s)) = (num(14), num(15)) {
                p.cpu_seconds = Some((u + s) as f64 / ticks);
            }
            p.threads = num(20);
            p.virtual_bytes = num(23);
            p.resident_bytes = num(24).map(|pages| pages * page);
            if let (Some(start), Some(boot)) = (num(22), boot_time()) {
                p.start_time_seconds = Some(boot + start as f64 / ticks);
            }
        }
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    p.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        });
    p
}

fn boot_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

fn clk_tck() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf reads a constant of the running system; no memory is
    // passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let p = super::read();
        assert!(p.resident_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() >= 3, "stdin, stdout, stderr at least");
        assert!(p.cpu_seconds.is_some());
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        let start = p.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0);
    }
}
