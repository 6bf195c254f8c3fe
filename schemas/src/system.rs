//! What the machine offers the work about to start, so both stages can refuse up
//! front what cannot fit rather than abort in an allocation.

/// The memory the kernel says new work can take (`MemAvailable` in
/// `/proc/meminfo`), in bytes; `None` where that file does not exist (macOS).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
