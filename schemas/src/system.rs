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

/// Free bytes on the file system that holds `path` (or the nearest folder above it
/// that exists, for an output not created yet) for an unprivileged writer; `None`
/// where it cannot be told.
pub fn available_disk(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ by platform (u32 block counts on macOS).
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_bavail as u64 * st.f_frsize as u64)
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
    fn the_disk_of_a_folder_not_made_yet_is_its_parent_s() {
        let dir = std::env::temp_dir();
        let free = available_disk(&dir).expect("the temp folder's file system");
        assert!(free > 0);
        assert!(available_disk(&dir.join("not/made/yet")).is_some());
    }

    #[test]
    fn proc_fields_are_read_in_kib() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   12345 kB\n";
        assert_eq!(kib_field(text, "MemAvailable:"), Some(12345));
        assert_eq!(kib_field(text, "VmSize:"), None);
    }
}
