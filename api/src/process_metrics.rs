//! Process and build metrics for `/metrics`, under the names every Prometheus client
//! library uses (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...),
//! read from `/proc/self` at scrape time (Linux; elsewhere they are left out), and
//! `aula_build_info`, always 1, whose labels name the build.

use aula_eventlog::metrics::Text;

/// The build's version (the workspace's), and the compiler when the build knew it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Appends the process metrics that could be read, and `aula_build_info`.
pub(crate) fn encode(out: &mut Text) {
    if let Some(process) = ProcessStats::read() {
        let metric = |out: &mut Text, name: &str, help: &str, kind: &str, value: f64| {
            out.header(name, help, kind);
            out.sample(name, "", &[], None, value);
        };
        metric(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            process.cpu_seconds,
        );
        metric(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            process.resident_bytes,
        );
        metric(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            process.virtual_bytes,
        );
        metric(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            process.start_time_seconds,
        );
        metric(
            out,
            "process_threads",
            "Number of OS threads in the process.",
            "gauge",
            process.threads,
        );
        if let Some(open) = process.open_fds {
            metric(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                open,
            );
        }
        if let Some(max) = process.max_fds {
            metric(
                out,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                max,
            );
        }
    }
    out.header(
        "aula_build_info",
        "The build of this process: always 1, labelled with its version.",
        "gauge",
    );
    let mut labels: Vec<(&str, &str)> = vec![("version", VERSION)];
    if let Some(rustc) = option_env!("AULA_BUILD_RUSTC") {
        labels.push(("rustc", rustc));
    }
    if let Some(commit) = option_env!("AULA_BUILD_GIT_COMMIT") {
        labels.push(("git_commit", commit));
    }
    out.sample("aula_build_info", "", &labels, None, 1.0);
}

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: f64,
    threads: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(boot_time_seconds)?;
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        #[allow(unsafe_code)]
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let mut stats = parse_stat(&stat, ticks as f64, page as f64, boot_time)?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .as_deref()
            .and_then(max_open_files);
        Some(stats)
    }
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
fn boot_time_seconds(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" in `/proc/self/limits` (`None` when unlimited).
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Fields of `/proc/self/stat` (proc(5)): after the command name in parentheses, which
/// may itself hold spaces and parentheses, come `state` (field 3) and the rest.
fn parse_stat(
    stat: &str,
    ticks_per_second: f64,
    page_bytes: f64,
    boot_time: f64,
) -> Option<ProcessStats> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / ticks_per_second,
        threads: field(20)?,
        start_time_seconds: boot_time + field(22)? / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_bytes,
        open_fds: None,
        max_fds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (aula (test) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 \
                    7 0 100000 123456789 1000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stats = parse_stat(stat, 100.0, 4096.0, 1_700_000_000.0).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.threads, 7.0);
        assert_eq!(stats.start_time_seconds, 1_700_000_000.0 + 1000.0);
        assert_eq!(stats.virtual_bytes, 123_456_789.0);
        assert_eq!(stats.resident_bytes, 1000.0 * 4096.0);
        assert_eq!(
            boot_time_seconds("cpu 1 2\nbtime 1700000000\n"),
            Some(1.7e9)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024.0));
    }
}
