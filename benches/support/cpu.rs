//! CPU time per request, summed from the process's threads, for benches on a shared machine.

use std::time::Duration;

/// Returns the CPU time, user and kernel, that the live threads of this process have used,
/// summed from Linux's `/proc/self/task/*/schedstat`, or `None` where that is unavailable.
/// Unlike wall time, it barely changes when other processes compete for the cores.
pub(crate) fn process_cpu_time() -> Option<Duration> {
    let mut nanos = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let schedstat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

/// CPU time and requests summed over every sample of one benchmark, warm-up included.
#[derive(Default)]
pub(crate) struct CpuTally {
    cpu: Option<Duration>,
    requests: u64,
}

impl CpuTally {
    /// Runs one sample of `requests` requests and adds the CPU time it used.
    pub(crate) fn sample(&mut self, requests: u64, sample: impl FnOnce() -> Duration) -> Duration {
        let before = process_cpu_time();
        let wall = sample();
        if let (Some(before), Some(after)) = (before, process_cpu_time()) {
            self.cpu = Some(self.cpu.unwrap_or_default() + (after - before));
        }
        self.requests += requests;
        wall
    }

    pub(crate) fn report(&self, benchmark: &str) {
        if let Some(cpu) = self.cpu {
            let per_request = cpu.as_nanos() as f64 / self.requests.max(1) as f64;
            println!(
                "{benchmark}: CPU time per request {per_request:.0} ns over {} requests",
                self.requests
            );
        }
    }
}
