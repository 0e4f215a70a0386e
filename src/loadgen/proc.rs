//! What the generator reads about a process (the server, on this machine) from `/proc`: its
//! resident memory now and at its peak, its CPU time, and the reset of that peak, so that one
//! run can measure the peak of each of its phases apart.

use std::io;

/// Resident memory of process `pid` in KiB (VmRSS), from `/proc`.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory of process `pid` in KiB (VmHWM) since it started or since the last
/// [`reset_peak`].
pub fn peak_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resets the peak of process `pid` to its resident memory now (`5` to `clear_refs`; needs
/// the right to write there: the same user, or root).
pub fn reset_peak(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| io::Error::new(e.kind(), format!("resetting the peak of {pid}: {e}")))
}

fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// CPU time (user + system) of process `pid` in seconds, from `/proc`.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 2..]
        .split(' ')
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name and state.
    Ok((ticks(11) + ticks(12)) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_peak_and_cpu_are_readable() {
        let pid = std::process::id();
        let rss = rss_kib(pid).unwrap();
        assert!(rss > 0);
        assert!(peak_kib(pid).unwrap() >= rss);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }

    #[test]
    fn a_peak_reset_brings_the_peak_down_to_what_is_resident() {
        let pid = std::process::id();
        // Touch 64 MiB, let it go, and the peak stays above what is resident...
        let big = vec![1u8; 64 << 20];
        assert_eq!(
            big.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>(),
            16384
        );
        drop(big);
        let before = peak_kib(pid).unwrap();
        assert!(before >= 64 << 10, "peak {before} KiB");
        // ...until it is reset (this needs the right to write clear_refs, as the bench does).
        reset_peak(pid).unwrap();
        let after = peak_kib(pid).unwrap();
        assert!(after < before - (32 << 10), "peak {before} -> {after} KiB");
    }
}
