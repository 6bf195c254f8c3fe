//! What the machine offers the work about to start, so both stages can refuse up
//! front what cannot fit rather than abort in an allocation.

/// The memory new work can take, in bytes: the kernel's `MemAvailable`
/// (`/proc/meminfo`), lowered to what is left of this process's address-space limit
/// (`ulimit -v`, which makes an allocation fail long before memory runs out) and of
/// its cgroup's `memory.max` where those are set; `None` where `/proc/meminfo` does
/// not exist (macOS).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mut available = kib_field(&text, "MemAvailable:")? * 1024;
    if let Some(left) = address_space_left() {
        available = available.min(left);
    }
    if let Some(left) = cgroup_left() {
        available = available.min(left);
    }
    Some(available)
}

/// `Name:   N kB` in a `/proc` file, in KiB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft `Max address space` limit less the address space already mapped.
fn address_space_left() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    let limit: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mapped = kib_field(&status, "VmSize:")? * 1024;
    Some(limit.saturating_sub(mapped))
}

/// cgroup v2's `memory.max` less `memory.current`, where a limit is set.
fn cgroup_left() -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_in_kib() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   12345 kB\n";
        assert_eq!(kib_field(text, "MemAvailable:"), Some(12345));
        assert_eq!(kib_field(text, "VmSize:"), None);
    }
}
